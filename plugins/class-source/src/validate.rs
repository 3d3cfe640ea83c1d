//! The checks class-source makes before it stores anything, in the order it
//! makes them: size, blank, UTF-8, NUL, then the structure of the source
//! (dedented; decorators, then one `class` statement with a body; nothing
//! after it at top level), then the qualname (dotted identifiers, no
//! keyword, last part equal to the class name under NFKC) and the module.
//!
//! Invariants: nothing here executes, imports or evaluates the source; every
//! check reads the text once through [`crate::scan::Scanner`].
//!
//! Decision: a top-level statement *after* the class (say an
//! `if __name__ == "__main__":` block) is refused too: the consumer re-runs
//! the whole source, and `inspect.getsource` never returns one.
//!
//! Decision: a module name is stored as given (runpy names modules
//! `<run_path>`), only refused when empty or holding control characters.

use unicode_normalization::UnicodeNormalization;

use crate::error::ValidationError;
use crate::scan::{self, is_ident_continue, is_ident_start, Scanner, Token};

/// The largest class source stored, in bytes (1 MiB). `inspect.getsource`
/// of real classes is a few kilobytes; this only stops accidents.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;

/// Python's hard keywords: never a name (soft keywords such as `match`,
/// `case`, `type` and `_` are).
pub const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// What a valid class source is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassInfo<'s> {
    /// The source, as UTF-8.
    pub source: &'s str,
    /// The name in the `class` statement.
    pub class_name: &'s str,
    /// Physical lines.
    pub lines: usize,
}

/// Checks `source` as one class definition (everything but names).
pub fn class_source(source: &[u8]) -> Result<ClassInfo<'_>, ValidationError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(ValidationError::TooLarge {
            size: source.len(),
            limit: MAX_SOURCE_BYTES,
        });
    }
    if source.iter().all(|b| b" \t\n\r\x0c\x0b".contains(b)) {
        return Err(ValidationError::Empty);
    }
    let text = std::str::from_utf8(source).map_err(|e| ValidationError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    if let Some(offset) = text.bytes().position(|b| b == 0) {
        return Err(ValidationError::NulByte {
            line: scan::line_of(text, offset),
        });
    }
    let class_name = structure(text)?;
    Ok(ClassInfo {
        source: text,
        class_name,
        lines: scan::line_count(text),
    })
}

/// Checks a qualname: dotted identifiers, none a keyword.
pub fn qualname(qualname: &str) -> Result<(), ValidationError> {
    for part in qualname.split('.') {
        if !is_identifier(part) {
            return Err(ValidationError::InvalidQualname {
                qualname: qualname.to_owned(),
                part: part.to_owned(),
            });
        }
        let normal: String = part.nfkc().collect();
        if KEYWORDS.contains(&normal.as_str()) {
            return Err(ValidationError::QualnameKeyword {
                qualname: qualname.to_owned(),
                keyword: normal,
            });
        }
    }
    Ok(())
}

/// Checks that `class_name` is the last part of `qualname` under NFKC (the
/// normalisation Python applies to identifiers).
pub fn name_matches(class_name: &str, qualname: &str) -> Result<(), ValidationError> {
    let last = qualname.rsplit('.').next().unwrap_or(qualname);
    if class_name.nfkc().eq(last.nfkc()) {
        Ok(())
    } else {
        Err(ValidationError::NameMismatch {
            class_name: class_name.to_owned(),
            qualname: qualname.to_owned(),
            last: last.to_owned(),
        })
    }
}

/// Checks a module name: non-empty, no control characters.
pub fn module(module: &str) -> Result<(), ValidationError> {
    if module.is_empty() || module.chars().any(char::is_control) {
        return Err(ValidationError::InvalidModule {
            module: module.to_owned(),
        });
    }
    Ok(())
}

/// Whether `text` is a Python identifier (`str.isidentifier`).
pub fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(is_ident_start) && chars.all(is_ident_continue)
}

/// Whether a (possibly truncated) text looks like Python source holding a
/// class statement: some logical line starts `class NAME`, and the text
/// scans cleanly up to it.
pub fn mentions_class(text: &str) -> bool {
    let mut tokens = Scanner::new(text);
    while let Some(Ok(token)) = tokens.next() {
        if !matches!(token, Token::LineStart { .. }) {
            continue;
        }
        if let (Some(Ok(Token::Name { text: "class", .. })), Some(Ok(Token::Name { text, .. }))) =
            (tokens.next(), tokens.next())
        {
            if !KEYWORDS.contains(&text) {
                return true;
            }
        }
    }
    false
}

/// The structural checks; returns the class name.
fn structure(text: &str) -> Result<&str, ValidationError> {
    let line = |offset: usize| scan::line_of(text, offset);
    let mut tokens = Scanner::new(text);
    let mut decorated = false;
    // Decorators, then the class statement.
    let class_offset = loop {
        let Some(token) = tokens.next().transpose()? else {
            return Err(match decorated {
                true => ValidationError::NotAClass {
                    line: scan::line_count(text),
                    found: "end of file".to_owned(),
                },
                false => ValidationError::NoStatement,
            });
        };
        let Token::LineStart { offset, indented } = token else {
            continue;
        };
        if indented {
            return Err(ValidationError::NotDedented { line: line(offset) });
        }
        match tokens.next().transpose()? {
            Some(Token::Op { ch: '@', .. }) => {
                decorated = true;
                skip_line(&mut tokens)?;
            }
            Some(Token::Name { text: "class", .. }) => break offset,
            other => {
                return Err(ValidationError::NotAClass {
                    line: line(offset),
                    found: first_word(text, offset, other),
                })
            }
        }
    };
    // `class NAME [type params] [(bases)] : [inline body]`
    let class_line = line(class_offset);
    let class_name = match tokens.next().transpose()? {
        Some(Token::Name { text, .. }) if !KEYWORDS.contains(&text) => text,
        _ => return Err(ValidationError::MissingClassName { line: class_line }),
    };
    let mut depth = 0usize;
    let mut colon = false;
    let mut inline_body = false;
    loop {
        match tokens.next().transpose()? {
            None | Some(Token::Newline) => break,
            Some(_) if colon => inline_body = true,
            Some(Token::Op {
                ch: '(' | '[' | '{',
                ..
            }) => depth += 1,
            Some(Token::Op {
                ch: ')' | ']' | '}',
                ..
            }) => depth = depth.saturating_sub(1),
            Some(Token::Op { ch: ':', .. }) if depth == 0 => colon = true,
            Some(_) => {}
        }
    }
    if !colon {
        return Err(ValidationError::MissingColon { line: class_line });
    }
    // The body, and nothing after it.
    let mut has_body = inline_body;
    while let Some(token) = tokens.next().transpose()? {
        let Token::LineStart { offset, indented } = token else {
            continue;
        };
        if !indented || inline_body {
            if !has_body {
                return Err(ValidationError::MissingBody { line: class_line });
            }
            return Err(ValidationError::TrailingStatement { line: line(offset) });
        }
        has_body = true;
    }
    if !has_body {
        return Err(ValidationError::MissingBody { line: class_line });
    }
    Ok(class_name)
}

/// Consumes tokens through the end of the current logical line.
fn skip_line(tokens: &mut Scanner<'_>) -> Result<(), ValidationError> {
    while let Some(token) = tokens.next().transpose()? {
        if token == Token::Newline {
            break;
        }
    }
    Ok(())
}

/// The first word of a refused statement, for its message.
fn first_word(text: &str, offset: usize, token: Option<Token<'_>>) -> String {
    match token {
        Some(Token::Name { text, .. }) => text.to_owned(),
        _ => text
            .get(offset..)
            .and_then(|rest| rest.chars().next())
            .map(String::from)
            .unwrap_or_else(|| "end of file".to_owned()),
    }
}

#[cfg(test)]
mod tests;
