//! Shell words: a command written as one string (compose's `command: echo "a b"`,
//! `entrypoint`, `healthcheck.test`, `run --entrypoint`) split as a POSIX shell splits words,
//! without expansions.

/// A quote is not closed; the message names the string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {quote} quote in `{text}`")]
pub struct SplitError {
    /// `single` or `double`.
    pub quote: &'static str,
    /// The whole string.
    pub text: String,
}

/// Splits `s` into words: white space separates words; `'…'` keeps everything; `"…"` keeps
/// everything but `\"`, `\\`, `\$` and `` \` `` (a backslash-newline is dropped, any other
/// backslash stays); a backslash outside quotes keeps the next character.
///
/// # Errors
/// An unterminated quote.
pub fn split(s: &str) -> Result<Vec<String>, SplitError> {
    let err = |quote| SplitError {
        quote,
        text: s.to_string(),
    };
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(ch) => cur.push(ch),
                        None => return Err(err("single")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(ch @ ('"' | '\\' | '$' | '`')) => cur.push(ch),
                            Some('\n') => {}
                            Some(ch) => {
                                cur.push('\\');
                                cur.push(ch);
                            }
                            None => return Err(err("double")),
                        },
                        Some(ch) => cur.push(ch),
                        None => return Err(err("double")),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_split_words() {
        assert_eq!(
            split(r#"sh -c "echo a b" c\ d 'e f'"#).unwrap(),
            ["sh", "-c", "echo a b", "c d", "e f"]
        );
        assert_eq!(split(r#""a\"b\x" '' x"#).unwrap(), [r#"a"b\x"#, "", "x"]);
        assert_eq!(split("").unwrap(), Vec::<String>::new());
        assert_eq!(
            split("echo 'x").unwrap_err().to_string(),
            "unterminated single quote in `echo 'x`"
        );
        assert!(split("echo \"x").is_err());
    }
}
