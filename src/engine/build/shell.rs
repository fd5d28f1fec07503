//! Variable expansion in Dockerfile arguments with Docker's rules (BuildKit's shell lexer):
//! `$V`, `${V}`, `${V:-word}`, `${V-word}`, `${V:+word}`, `${V+word}`, `${V:?msg}`,
//! `${V?msg}`, `${V#pat}`, `${V##pat}`, `${V%pat}`, `${V%%pat}`; single quotes are literal,
//! double quotes expand but do not split, the escape character (`\` or `` ` ``) takes the
//! next character literally (inside double quotes only before `"`, `$` and itself). Quotes are
//! removed. [`words`] splits on unquoted blanks, including blanks that an unquoted expansion
//! produced; [`word`] keeps everything in one string.

/// Looks a variable up.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: Lookup<'a>,
}

#[derive(Default)]
struct Words {
    words: Vec<String>,
    cur: String,
    in_word: bool,
    /// Everything, blanks kept (the single-word result).
    text: String,
}

impl Words {
    /// A character that splits words when it is blank.
    fn raw(&mut self, c: char) {
        self.text.push(c);
        if c.is_whitespace() {
            if self.in_word {
                self.words.push(std::mem::take(&mut self.cur));
                self.in_word = false;
            }
        } else {
            self.cur.push(c);
            self.in_word = true;
        }
    }
    /// A character that is always part of the word.
    fn lit(&mut self, c: char) {
        self.text.push(c);
        self.cur.push(c);
        self.in_word = true;
    }
    fn raw_str(&mut self, s: &str) {
        for c in s.chars() {
            self.raw(c);
        }
    }
    fn lit_str(&mut self, s: &str) {
        self.text.push_str(s);
        self.cur.push_str(s);
        self.in_word = true;
    }
    /// Marks the word as present even when empty (`""`).
    fn mark(&mut self) {
        self.in_word = true;
    }
    fn finish(self) -> Vec<String> {
        let mut me = self;
        if me.in_word {
            me.words.push(me.cur);
        }
        me.words
    }
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// Processes until `stop` (not consumed) or the end.
    fn run(&mut self, stop: Option<char>) -> Result<Words, ExpandError> {
        let mut w = Words::default();
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                break;
            }
            if c == self.escape {
                self.pos += 1;
                // A lone escape at the end is dropped.
                if let Some(n) = self.next() {
                    w.lit(n);
                }
                continue;
            }
            match c {
                '\'' => {
                    self.pos += 1;
                    w.mark();
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(ch) => w.lit(ch),
                            None => return Err(ExpandError::Unterminated("single-quote")),
                        }
                    }
                }
                '"' => {
                    self.pos += 1;
                    w.mark();
                    loop {
                        match self.peek() {
                            Some('"') => {
                                self.pos += 1;
                                break;
                            }
                            Some('$') => {
                                let v = self.dollar()?;
                                w.lit_str(&v);
                            }
                            Some(ch) if ch == self.escape => {
                                self.pos += 1;
                                match self.peek() {
                                    None => {}
                                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                                        self.pos += 1;
                                        w.lit(n);
                                    }
                                    Some(_) => w.lit(ch),
                                }
                            }
                            Some(ch) => {
                                self.pos += 1;
                                w.lit(ch);
                            }
                            None => return Err(ExpandError::Unterminated("double-quote")),
                        }
                    }
                }
                '$' => {
                    let v = self.dollar()?;
                    w.raw_str(&v);
                }
                _ => {
                    self.pos += 1;
                    w.raw(c);
                }
            }
        }
        Ok(w)
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        n
    }

    /// At a `$`: the expansion.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1; // '$'
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err(ExpandError::MissingName);
                }
                let value = (self.env)(&name);
                match self.next() {
                    Some('}') => Ok(value.unwrap_or_default()),
                    Some(':') => {
                        let op = self.next();
                        let word = self.word_until_brace()?;
                        let set = value.as_deref().is_some_and(|v| !v.is_empty());
                        match op {
                            Some('-') => Ok(if set { value.unwrap_or_default() } else { word }),
                            Some('+') => Ok(if set { word } else { String::new() }),
                            Some('?') => {
                                if set {
                                    Ok(value.unwrap_or_default())
                                } else {
                                    Err(ExpandError::Unset {
                                        name,
                                        message: word,
                                    })
                                }
                            }
                            _ => Err(ExpandError::Modifier(name)),
                        }
                    }
                    Some(op @ ('-' | '+' | '?')) => {
                        let word = self.word_until_brace()?;
                        match op {
                            '-' => Ok(value.unwrap_or(word)),
                            '+' => Ok(if value.is_some() { word } else { String::new() }),
                            _ => value.ok_or(ExpandError::Unset {
                                name,
                                message: word,
                            }),
                        }
                    }
                    Some(op @ ('#' | '%')) => {
                        let longest = self.peek() == Some(op);
                        if longest {
                            self.pos += 1;
                        }
                        let pat = self.word_until_brace()?;
                        let v = value.unwrap_or_default();
                        Ok(trim_pattern(&v, &pat, op == '#', longest))
                    }
                    _ => Err(ExpandError::Unclosed(Some(name))),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                Ok((self.env)(&name).unwrap_or_default())
            }
            Some(c) if c.is_ascii_digit() => {
                // Positional parameters are empty in a Dockerfile.
                self.pos += 1;
                Ok(String::new())
            }
            _ => Ok("$".to_string()),
        }
    }

    fn word_until_brace(&mut self) -> Result<String, ExpandError> {
        let w = self.run(Some('}'))?;
        if self.next() != Some('}') {
            return Err(ExpandError::Unclosed(None));
        }
        Ok(w.text)
    }
}

/// `${v#pat}` and friends, with `*` and `?` wildcards.
fn trim_pattern(v: &str, pat: &str, prefix: bool, longest: bool) -> String {
    let idx: Vec<usize> = v
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(v.len()))
        .collect();
    let cands: Box<dyn Iterator<Item = &usize>> = if prefix == longest {
        Box::new(idx.iter().rev())
    } else {
        Box::new(idx.iter())
    };
    for &i in cands {
        let (part, rest) = if prefix {
            (&v[..i], &v[i..])
        } else {
            (&v[i..], &v[..i])
        };
        if super::ignore::glob_match(pat, part, false) {
            return rest.to_string();
        }
    }
    v.to_string()
}

/// Why a word cannot be expanded (the messages are BuildKit's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A quote is not closed.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// `${}`.
    #[error("bad substitution: missing variable name")]
    MissingName,
    /// `${NAME?message}` or `${NAME:?message}` of an unset variable.
    #[error("{name}: {}", if message.is_empty() { "is not allowed to be unset" } else { message })]
    Unset {
        /// The variable.
        name: String,
        /// The message given after `?`, if any.
        message: String,
    },
    /// A modifier after `:` that is not `-`, `+` or `?`.
    #[error("unsupported modifier in ${{{0}:…}}")]
    Modifier(String),
    /// A `${` without its `}` (with the variable's name when it was read).
    #[error("missing '}}'{}", .0.as_ref().map(|n| format!(" in ${{{n}")).unwrap_or_default())]
    Unclosed(Option<String>),
}

/// Expands `s` into words (split on unquoted blanks).
pub fn words(s: &str, env: Lookup<'_>, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut lx = Lexer {
        chars: s.chars().collect(),
        pos: 0,
        escape,
        env,
    };
    Ok(lx.run(None)?.finish())
}

/// Expands `s` as one word (blanks kept as written, expansions not split).
pub fn word(s: &str, env: Lookup<'_>, escape: char) -> Result<String, ExpandError> {
    let mut lx = Lexer {
        chars: s.chars().collect(),
        pos: 0,
        escape,
        env,
    };
    Ok(lx.run(None)?.text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "A" => Some("a".into()),
            "SP" => Some("x  y".into()),
            "E" => Some(String::new()),
            "P" => Some("/usr/local/bin".into()),
            _ => None,
        }
    }

    #[test]
    fn shell_expansion_forms() {
        let w = |s: &str| word(s, &env, '\\').unwrap();
        assert_eq!(w("$A"), "a");
        assert_eq!(w("${A}b"), "ab");
        assert_eq!(w("${N:-d}"), "d");
        assert_eq!(w("${E:-d}"), "d");
        assert_eq!(w("${E-d}"), "");
        assert_eq!(w("${N-d}"), "d");
        assert_eq!(w("${A:+x}"), "x");
        assert_eq!(w("${E:+x}"), "");
        assert_eq!(w("${E+x}"), "x");
        assert_eq!(w("${N:-$A}"), "a");
        assert_eq!(w("${P#*/}"), "usr/local/bin");
        assert_eq!(w("${P##*/}"), "bin");
        assert_eq!(w("${P%/*}"), "/usr/local");
        assert_eq!(w("${P%%/l*}"), "/usr");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "a");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("\"\\$A\""), "$A");
        assert_eq!(w("\"a\\b\""), "a\\b");
        assert_eq!(w("a\\ b"), "a b");
        assert_eq!(w("$"), "$");
        assert_eq!(w("a  b"), "a  b");
        assert_eq!(w("\"x  y\" z"), "x  y z");
        // The errors say what BuildKit says.
        let e = |s: &str| word(s, &env, '\\').unwrap_err().to_string();
        assert_eq!(e("${A"), "missing '}' in ${A");
        assert_eq!(e("${N:?missing}"), "N: missing");
        assert_eq!(e("${N?}"), "N: is not allowed to be unset");
        assert_eq!(e("${N:=x}"), "unsupported modifier in ${N:…}");
        assert_eq!(e("${}"), "bad substitution: missing variable name");
        assert_eq!(e("${N:-x"), "missing '}'");
        assert_eq!(
            e("'open"),
            "unexpected end of statement while looking for matching single-quote"
        );
        assert_eq!(word("`$A", &env, '`').unwrap(), "$A");
    }

    #[test]
    fn shell_words_split() {
        let ws = |s: &str| words(s, &env, '\\').unwrap();
        assert_eq!(ws("a b  c"), vec!["a", "b", "c"]);
        assert_eq!(ws("$SP z"), vec!["x", "y", "z"]);
        assert_eq!(ws("\"$SP\" z"), vec!["x  y", "z"]);
        assert_eq!(ws("'' b"), vec!["", "b"]);
        assert_eq!(ws("a\\ b"), vec!["a b"]);
    }
}
