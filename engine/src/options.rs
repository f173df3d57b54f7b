//! Options strings of SQL functions and statements: `key=value` pairs
//! separated by commas, where a value runs to the next comma outside
//! parentheses and quotes, so audience expressions and lists need no
//! quoting: `'size=5%, universe=city IN (beijing, shanghai)'`.

use crate::error::{Error, Result};

/// The `key=value` pairs of an options string, keys in lower case, with the
/// 1-based character position of each pair.
pub fn split(function: &str, text: &str) -> Result<Vec<(String, String, usize)>> {
    let chars: Vec<char> = text.chars().collect();
    let mut parts = Vec::new();
    let (mut start, mut depth, mut quote) = (0usize, 0i32, None::<char>);
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        match (quote, c) {
            (Some(q), Some(c)) if c == q => quote = None,
            (Some(_), Some(_)) => {}
            (Some(q), None) => {
                return Err(Error::InvalidArgument(format!(
                    "{function}: options: unterminated {q} at the end"
                )));
            }
            (None, Some('\'' | '"')) => quote = c,
            (None, Some('(')) => depth += 1,
            (None, Some(')')) => depth -= 1,
            (None, Some(',')) if depth == 0 => {
                parts.push((start, i));
                start = i + 1;
            }
            (None, Some(_)) => {}
            (None, None) => parts.push((start, i)),
        }
    }
    let mut pairs = Vec::new();
    for (from, to) in parts {
        let part: String = chars[from..to].iter().collect();
        if part.trim().is_empty() {
            if text.trim().is_empty() {
                continue;
            }
            return Err(Error::InvalidArgument(format!(
                "{function}: options: empty option at character {}",
                from + 1
            )));
        }
        let leading = part.chars().take_while(|c| c.is_whitespace()).count();
        let position = from + leading + 1;
        let Some((key, value)) = part.split_once('=') else {
            return Err(Error::InvalidArgument(format!(
                "{function}: options: expected key=value at character {position}, got {:?}",
                part.trim()
            )));
        };
        pairs.push((
            key.trim().to_ascii_lowercase(),
            value.trim().to_string(),
            position,
        ));
    }
    Ok(pairs)
}

/// `true`/`on`/`yes` or `false`/`off`/`no`.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" => Some(true),
        "false" | "off" | "no" => Some(false),
        _ => None,
    }
}

/// `(a, "b c", d)` or `a`: names, double quotes removed.
pub fn parse_names(text: &str) -> Vec<String> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .unwrap_or(text);
    inner
        .split(',')
        .map(|name| {
            let name = name.trim();
            match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => name.to_string(),
            }
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_outside_parentheses_and_quotes() {
        let pairs = split(
            "f",
            "size=5%, universe=city IN (beijing, shanghai) AND tier='a,b', Method = iv",
        )
        .expect("parses");
        assert_eq!(
            pairs,
            vec![
                ("size".to_string(), "5%".to_string(), 1),
                (
                    "universe".to_string(),
                    "city IN (beijing, shanghai) AND tier='a,b'".to_string(),
                    10
                ),
                ("method".to_string(), "iv".to_string(), 63),
            ]
        );
        assert!(split("f", "").expect("parses").is_empty());
        assert_eq!(
            split("f", "size=1, oops").expect_err("fails").to_string(),
            "f: options: expected key=value at character 9, got \"oops\""
        );
    }
}
