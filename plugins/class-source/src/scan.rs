//! A small Python tokenizer: just enough to find logical lines and their
//! first tokens without being fooled by strings, comments, brackets or line
//! continuations.
//!
//! [`Scanner`] yields [`Token`]s: a [`Token::LineStart`] before the first
//! token of every logical line (saying whether it is indented), names,
//! string literals (one token each, whatever their prefix or length),
//! punctuation and a [`Token::Newline`] at the end of every logical line.
//! Blank lines and comments yield nothing. A newline inside brackets, inside
//! a triple-quoted string or after a backslash does not end a logical line.
//!
//! Invariants: the scanner never panics and never indexes out of bounds (all
//! reads go through `get`); recursion (f-string replacement fields inside
//! f-strings) is capped at [`MAX_NESTING`]; work is linear in the input.
//!
//! Decision: the scanner is lenient about what does not matter for finding
//! statements (operators, numbers, stray closing brackets, invalid escapes);
//! it is not a Python syntax checker, and the consumer's `exec` reports the
//! rest.
//!
//! Decision: f-strings are scanned as PEP 701 (Python 3.12) defines them:
//! a replacement field `{…}` is code, so it may hold strings using the same
//! quote, and a format spec after a top-level `:` is text with nested fields.

use crate::error::ValidationError;

/// How deeply f-string replacement fields may nest inside each other.
pub const MAX_NESTING: usize = 32;

/// One token of a logical line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'s> {
    /// A logical line starts at byte `offset`; `indented` if whitespace
    /// precedes its first token on its physical line.
    LineStart {
        /// Byte offset of the line's first token.
        offset: usize,
        /// Whether the line is indented.
        indented: bool,
    },
    /// An identifier or keyword.
    Name {
        /// Byte offset.
        offset: usize,
        /// The text.
        text: &'s str,
    },
    /// A string literal, prefix included.
    Str {
        /// Byte offset.
        offset: usize,
    },
    /// A number literal.
    Number {
        /// Byte offset.
        offset: usize,
    },
    /// A punctuation character or any other character.
    Op {
        /// Byte offset.
        offset: usize,
        /// The character.
        ch: char,
    },
    /// The end of a logical line.
    Newline,
}

/// 1-based line number of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    let before = text.as_bytes().get(..offset).unwrap_or(text.as_bytes());
    let mut line = 1;
    let mut i = 0;
    while let Some(&b) = before.get(i) {
        match b {
            b'\n' => line += 1,
            b'\r' if before.get(i + 1) != Some(&b'\n') => line += 1,
            _ => {}
        }
        i += 1;
    }
    line
}

/// Number of physical lines: terminators, plus one for an unterminated last
/// line.
pub fn line_count(text: &str) -> usize {
    let ends = line_of(text, text.len()) - 1;
    let last_open = !matches!(text.as_bytes().last(), None | Some(b'\n' | b'\r'));
    ends + usize::from(last_open)
}

/// Whether `c` may start a Python identifier.
pub fn is_ident_start(c: char) -> bool {
    c == '_' || unicode_ident::is_xid_start(c)
}

/// Whether `c` may continue a Python identifier.
pub fn is_ident_continue(c: char) -> bool {
    unicode_ident::is_xid_continue(c)
}

/// The tokenizer; an iterator of `Result<Token, ValidationError>` that stops
/// after the first error.
pub struct Scanner<'s> {
    text: &'s str,
    pos: usize,
    depth: usize,
    outer_bracket: usize,
    at_line_start: bool,
    line_open: bool,
    done: bool,
}

impl<'s> Scanner<'s> {
    /// A scanner over `text`. A leading byte-order mark is skipped.
    pub fn new(text: &'s str) -> Self {
        let pos = if text.starts_with('\u{feff}') { 3 } else { 0 };
        Scanner {
            text,
            pos,
            depth: 0,
            outer_bracket: 0,
            at_line_start: true,
            line_open: false,
            done: false,
        }
    }

    fn byte(&self, at: usize) -> Option<u8> {
        self.text.as_bytes().get(at).copied()
    }

    fn char_at(&self, at: usize) -> Option<char> {
        self.text.get(at..).and_then(|rest| rest.chars().next())
    }

    fn line(&self, offset: usize) -> usize {
        line_of(self.text, offset)
    }

    /// Skips spaces, tabs and form feeds.
    fn skip_blanks(&mut self) {
        while matches!(self.byte(self.pos), Some(b' ' | b'\t' | b'\x0c')) {
            self.pos += 1;
        }
    }

    /// Length of the line terminator at `at` (0 if none).
    fn newline_len(&self, at: usize) -> usize {
        match (self.byte(at), self.byte(at + 1)) {
            (Some(b'\r'), Some(b'\n')) => 2,
            (Some(b'\r' | b'\n'), _) => 1,
            _ => 0,
        }
    }

    /// Moves to the terminator ending the current physical line (or EOF).
    fn skip_comment(&mut self) {
        while let Some(b) = self.byte(self.pos) {
            if b == b'\n' || b == b'\r' {
                break;
            }
            self.pos += 1;
        }
    }

    /// Advances past an identifier starting at `pos`; returns its text.
    fn scan_name(&mut self) -> &'s str {
        let start = self.pos;
        if let Some(c) = self.char_at(self.pos) {
            self.pos += c.len_utf8();
        }
        while let Some(c) = self.char_at(self.pos) {
            if !is_ident_continue(c) {
                break;
            }
            self.pos += c.len_utf8();
        }
        self.text.get(start..self.pos).unwrap_or("")
    }

    /// Advances past a number (digits, letters, `_`, `.` and signed
    /// exponents); precision does not matter here.
    fn scan_number(&mut self) {
        let start = self.pos;
        let hex = matches!(
            (self.byte(start), self.byte(start + 1)),
            (Some(b'0'), Some(b'x' | b'X'))
        );
        while let Some(b) = self.byte(self.pos) {
            let exponent_sign = (b == b'+' || b == b'-')
                && !hex
                && self.pos > start
                && matches!(self.byte(self.pos - 1), Some(b'e' | b'E'));
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || exponent_sign {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// Scans a string literal whose opening quote is at `pos`; `start` is
    /// where its prefix began.
    fn scan_string(
        &mut self,
        start: usize,
        prefix: Prefix,
        nesting: usize,
    ) -> Result<(), ValidationError> {
        let format = prefix.format;
        let Some(quote) = self.byte(self.pos) else {
            return Err(ValidationError::UnterminatedString {
                line: self.line(start),
            });
        };
        let triple =
            self.byte(self.pos + 1) == Some(quote) && self.byte(self.pos + 2) == Some(quote);
        self.pos += if triple { 3 } else { 1 };
        loop {
            let Some(b) = self.byte(self.pos) else {
                return Err(ValidationError::UnterminatedString {
                    line: self.line(start),
                });
            };
            match b {
                b'\\' => {
                    // An escape (or, in raw strings, a backslash that still
                    // keeps the next character from closing the string).
                    self.pos += 1;
                    let newline = self.newline_len(self.pos);
                    if newline > 0 {
                        self.pos += newline;
                    } else if let Some(c) = self.char_at(self.pos) {
                        if format
                            && !prefix.raw
                            && c == 'N'
                            && self.byte(self.pos + 1) == Some(b'{')
                        {
                            // `\N{NAME}`: a named character, not a field.
                            while let Some(b) = self.byte(self.pos) {
                                if b == b'}' || b == quote || b == b'\n' || b == b'\r' {
                                    break;
                                }
                                self.pos += 1;
                            }
                        } else if !(format && (c == '{' || c == '}')) {
                            self.pos += c.len_utf8();
                        }
                    }
                }
                b'\n' | b'\r' if !triple => {
                    return Err(ValidationError::UnterminatedString {
                        line: self.line(start),
                    });
                }
                _ if b == quote => {
                    if !triple {
                        self.pos += 1;
                        return Ok(());
                    }
                    if self.byte(self.pos + 1) == Some(quote)
                        && self.byte(self.pos + 2) == Some(quote)
                    {
                        self.pos += 3;
                        return Ok(());
                    }
                    self.pos += 1;
                }
                b'{' if format => {
                    if self.byte(self.pos + 1) == Some(b'{') {
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                        self.scan_field(start, nesting + 1)?;
                    }
                }
                _ => self.pos += 1,
            }
        }
    }

    /// Scans an f-string replacement field after its `{`, through its `}`.
    fn scan_field(&mut self, start: usize, nesting: usize) -> Result<(), ValidationError> {
        if nesting > MAX_NESTING {
            return Err(ValidationError::TooDeeplyNested {
                line: self.line(self.pos),
                limit: MAX_NESTING,
            });
        }
        let mut depth = 0usize;
        // The expression: code.
        loop {
            let Some(b) = self.byte(self.pos) else {
                return Err(ValidationError::UnterminatedString {
                    line: self.line(start),
                });
            };
            match b {
                b'(' | b'[' | b'{' => {
                    depth += 1;
                    self.pos += 1;
                }
                b')' | b']' => {
                    depth = depth.saturating_sub(1);
                    self.pos += 1;
                }
                b'}' if depth == 0 => {
                    self.pos += 1;
                    return Ok(());
                }
                b'}' => {
                    depth -= 1;
                    self.pos += 1;
                }
                b':' if depth == 0 => {
                    self.pos += 1;
                    break;
                }
                b'#' => self.skip_comment(),
                b'"' | b'\'' => self.scan_string(self.pos, Prefix::PLAIN, nesting)?,
                _ => match self.char_at(self.pos) {
                    Some(c) if is_ident_start(c) => {
                        let name = self.scan_name();
                        if let Some(prefix) = string_prefix(name) {
                            if matches!(self.byte(self.pos), Some(b'"' | b'\'')) {
                                self.scan_string(self.pos, prefix, nesting)?;
                            }
                        }
                    }
                    Some(c) => self.pos += c.len_utf8(),
                    None => self.pos += 1,
                },
            }
        }
        // The format spec: text with nested fields.
        loop {
            let Some(b) = self.byte(self.pos) else {
                return Err(ValidationError::UnterminatedString {
                    line: self.line(start),
                });
            };
            self.pos += 1;
            match b {
                b'{' => self.scan_field(start, nesting + 1)?,
                b'}' => return Ok(()),
                _ => {}
            }
        }
    }

    fn next_token(&mut self) -> Result<Option<Token<'s>>, ValidationError> {
        loop {
            if self.at_line_start {
                let line_begin = self.pos;
                self.skip_blanks();
                let Some(b) = self.byte(self.pos) else {
                    return Ok(None);
                };
                match b {
                    b'#' => {
                        self.skip_comment();
                        continue;
                    }
                    b'\n' | b'\r' => {
                        self.pos += self.newline_len(self.pos);
                        continue;
                    }
                    _ => {
                        self.at_line_start = false;
                        self.line_open = true;
                        // A form feed resets the column, as in Python.
                        let blanks = self.text.as_bytes().get(line_begin..self.pos);
                        let after_feed = blanks
                            .and_then(|b| b.rsplit(|&c| c == b'\x0c').next())
                            .unwrap_or_default();
                        return Ok(Some(Token::LineStart {
                            offset: self.pos,
                            indented: !after_feed.is_empty(),
                        }));
                    }
                }
            }
            self.skip_blanks();
            let offset = self.pos;
            let Some(b) = self.byte(offset) else {
                if self.depth > 0 {
                    return Err(ValidationError::UnclosedBracket {
                        line: self.line(self.outer_bracket),
                    });
                }
                if self.line_open {
                    self.line_open = false;
                    return Ok(Some(Token::Newline));
                }
                return Ok(None);
            };
            match b {
                b'#' => self.skip_comment(),
                b'\\' => {
                    let newline = self.newline_len(offset + 1);
                    self.pos += 1 + newline;
                    if newline == 0 {
                        return Ok(Some(Token::Op { offset, ch: '\\' }));
                    }
                }
                b'\n' | b'\r' => {
                    self.pos += self.newline_len(offset);
                    if self.depth == 0 {
                        self.at_line_start = true;
                        self.line_open = false;
                        return Ok(Some(Token::Newline));
                    }
                }
                b'"' | b'\'' => {
                    self.scan_string(offset, Prefix::PLAIN, 0)?;
                    return Ok(Some(Token::Str { offset }));
                }
                b'0'..=b'9' => {
                    self.scan_number();
                    return Ok(Some(Token::Number { offset }));
                }
                b'.' if matches!(self.byte(offset + 1), Some(b'0'..=b'9')) => {
                    self.scan_number();
                    return Ok(Some(Token::Number { offset }));
                }
                b'(' | b'[' | b'{' => {
                    if self.depth == 0 {
                        self.outer_bracket = offset;
                    }
                    self.depth += 1;
                    self.pos += 1;
                    return Ok(Some(Token::Op {
                        offset,
                        ch: char::from(b),
                    }));
                }
                b')' | b']' | b'}' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.pos += 1;
                    return Ok(Some(Token::Op {
                        offset,
                        ch: char::from(b),
                    }));
                }
                _ => {
                    let Some(c) = self.char_at(offset) else {
                        // Not on a char boundary: cannot happen for &str
                        // input, but never loop forever.
                        self.pos += 1;
                        continue;
                    };
                    if is_ident_start(c) {
                        let text = self.scan_name();
                        if let Some(prefix) = string_prefix(text) {
                            if matches!(self.byte(self.pos), Some(b'"' | b'\'')) {
                                self.scan_string(offset, prefix, 0)?;
                                return Ok(Some(Token::Str { offset }));
                            }
                        }
                        return Ok(Some(Token::Name { offset, text }));
                    }
                    self.pos += c.len_utf8();
                    return Ok(Some(Token::Op { offset, ch: c }));
                }
            }
        }
    }
}

/// What a string prefix says about the literal.
#[derive(Debug, Clone, Copy)]
struct Prefix {
    /// f- or t-string: replacement fields are code.
    format: bool,
    /// Raw: backslashes are literal (but still keep a quote from closing).
    raw: bool,
}

impl Prefix {
    const PLAIN: Prefix = Prefix {
        format: false,
        raw: false,
    };
}

/// If `name` is a string prefix (`r`, `b`, `f`, `rb`, `t`, …, any case),
/// what it says.
fn string_prefix(name: &str) -> Option<Prefix> {
    if name.is_empty() || name.len() > 2 {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let valid = matches!(
        lower.as_str(),
        "r" | "u" | "b" | "br" | "rb" | "f" | "fr" | "rf" | "t" | "tr" | "rt"
    );
    valid.then(|| Prefix {
        format: lower.contains('f') || lower.contains('t'),
        raw: lower.contains('r'),
    })
}

impl<'s> Iterator for Scanner<'s> {
    type Item = Result<Token<'s>, ValidationError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_token() {
            Ok(Some(token)) => Some(Ok(token)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tokens of `text` as short strings: `^` / `>` for an unindented /
    /// indented line start, `;` for a newline, `S` for a string, `N` for a
    /// number, names and operators as themselves.
    fn tokens(text: &str) -> String {
        let mut out = Vec::new();
        for token in Scanner::new(text) {
            out.push(match token {
                Ok(Token::LineStart {
                    indented: false, ..
                }) => "^".to_owned(),
                Ok(Token::LineStart { indented: true, .. }) => ">".to_owned(),
                Ok(Token::Name { text, .. }) => text.to_owned(),
                Ok(Token::Str { .. }) => "S".to_owned(),
                Ok(Token::Number { .. }) => "N".to_owned(),
                Ok(Token::Op { ch, .. }) => ch.to_string(),
                Ok(Token::Newline) => ";".to_owned(),
                Err(error) => format!("error: {error}"),
            });
        }
        out.join(" ")
    }

    #[track_caller]
    fn check(text: &str, expected: &str) {
        assert_eq!(tokens(text), expected, "{text:?}");
    }

    #[test]
    fn logical_lines_and_indentation() {
        check("class A:\n    x = 1\n", "^ class A : ; > x = N ;");
        check("\n\n# c\n  # indented comment\nx\n", "^ x ;");
        check("x\r\n\ty\r", "^ x ; > y ;");
        check("\u{feff}x", "^ x ;");
        check("\x0cx\n\x0c  y\n", "^ x ; > y ;");
    }

    #[test]
    fn strings_hide_their_contents() {
        check("x = 'a # b' \"c\" # d\n", "^ x = S S ;");
        check("x = \"\"\"\nclass B:\n'''\"\"\"\n", "^ x = S ;");
        check("x = r'\\'' + b'\\\\'\n", "^ x = S + S ;");
        check("x = rb'a' Rb\"b\" br'''c'''\n", "^ x = S S S ;");
        check("x = 'a\\\nb'\n", "^ x = S ;");
        check(
            "x = 'abc\n",
            "^ x = error: line 1: unterminated string literal",
        );
        check(
            "x = '''abc\n\n",
            "^ x = error: line 1: unterminated string literal",
        );
    }

    #[test]
    fn f_strings_follow_pep_701() {
        check("x = f\"{d[\"k\"]}\" + 1\n", "^ x = S + N ;");
        check("x = f'{a:{w}.{p}f} {{}}' y\n", "^ x = S y ;");
        check("x = f'{y:'^10}'\n", "^ x = S ;");
        check("x = f'''{\n  a # c\n}'''\n", "^ x = S ;");
        check("x = f'{f\"{g'{1}'}\"}'\n", "^ x = S ;");
        check("x = rf'\\{a}'\n", "^ x = S ;");
        check("x = f'\\N{EM DASH}' + rf'\\N{a}'\n", "^ x = S + S ;");
        let deep = format!("f'{}{}'", "{f'".repeat(40), "'}".repeat(40));
        assert!(
            tokens(&deep).contains("nested more than"),
            "{}",
            tokens(&deep)
        );
    }

    #[test]
    fn brackets_and_backslashes_continue_lines() {
        check("x = (1,\n2)\ny\n", "^ x = ( N , N ) ; ^ y ;");
        check("x = 1 + \\\n  2\n", "^ x = N + N ;");
        check("x = [\n# c\n]\n", "^ x = [ ] ;");
        check(
            "x = (\n",
            "^ x = ( error: line 1: bracket opened here is never closed",
        );
        check("x = 1e-5 + 0x_e-1 + .5j", "^ x = N + N - N + N ;");
    }

    #[test]
    fn line_counting() {
        assert_eq!(line_count(""), 0);
        assert_eq!(line_count("a"), 1);
        assert_eq!(line_count("a\n"), 1);
        assert_eq!(line_count("a\r\nb"), 2);
        assert_eq!(line_count("a\rb\r"), 2);
        assert_eq!(line_of("a\nb\r\nc", 5), 3);
    }
}
