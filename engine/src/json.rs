//! JSON string literals, escaped as `serde_json` and PostgreSQL's `json`
//! functions escape them: `"` and `\`, `\b \f \n \r \t`, and `\u00XX` for the
//! other control characters. Used where JSON text is written by hand on a hot
//! path (the audit log's lines) and by SQL functions that return JSON text.

/// Whether a byte is written escaped: `"`, `\\` and the control characters.
const ESCAPED: [bool; 256] = {
    let mut escaped = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        escaped[byte] = true;
        byte += 1;
    }
    escaped[b'"' as usize] = true;
    escaped[b'\\' as usize] = true;
    escaped
};

/// Appends `value` to `out` as a JSON string literal. Most strings (a role, an
/// address, a statement) have nothing to escape and are copied whole.
pub fn push_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(value.len() + 2);
    out.push('"');
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(offset) = bytes[start..].iter().position(|&b| ESCAPED[usize::from(b)]) {
        let i = start + offset;
        let byte = bytes[i];
        // Every escaped byte is ASCII, so `i` is a character boundary.
        out.push_str(&value[start..i]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_postgresql_escapes_them() {
        let mut out = String::new();
        push_string(
            &mut out,
            "a\"b\\c\nd\re\tf\u{8}g\u{c}h\u{1}i\u{1f}j\u{7f}é😀",
        );
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\\u001fj\u{7f}é😀\""
        );
    }

    #[test]
    fn strings_without_escapes_and_escapes_at_either_end() {
        let mut out = String::new();
        for value in ["", "SELECT ?", "\"", "\n\n", "\"é\\"] {
            push_string(&mut out, value);
            out.push(',');
        }
        assert_eq!(out, "\"\",\"SELECT ?\",\"\\\"\",\"\\n\\n\",\"\\\"é\\\\\",");
    }
}
