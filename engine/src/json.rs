//! JSON string literals, escaped as `serde_json` and PostgreSQL's `json`
//! functions escape them: `"` and `\`, `\b \f \n \r \t`, and `\u00XX` for the
//! other control characters. Used where JSON text is written by hand on a hot
//! path (the audit log's lines) and by SQL functions that return JSON text.

/// Appends `value` to `out` as a JSON string literal.
pub fn push_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let short = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched is ASCII, so `i` is a character boundary.
        out.push_str(&value[start..i]);
        match short.is_empty() {
            false => out.push_str(short),
            true => {
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
}
