//! Text shown to people: [`escape_control`], the one place that makes a
//! value safe to print in a line- or column-oriented layout.
//!
//! Invariant: every human-readable listing (`ls`, `inspect`, `status`,
//! `verify`, `rm`) passes each value it prints through [`escape_control`],
//! so a name or an info value can never add a line, move the cursor or
//! reorder text on the reader's terminal. `--json` outputs print values
//! exactly (JSON escapes them itself).
//!
//! Decision: escaped are the control characters (`char::is_control`: C0,
//! DEL, C1), the Unicode line and paragraph separators (U+2028, U+2029) and
//! the bidirectional formatting characters (U+200E, U+200F, U+202A–U+202E,
//! U+2066–U+2069), which reorder how a terminal shows the rest of the line.
//! `\n`, `\r` and `\t` print as those two-character escapes, everything else
//! as `\u{XX}` (Rust's notation, lowercase hex). A backslash is left as it
//! is: output stays readable for Windows-style paths and regexes, at the
//! cost of `a\nb` (backslash, `n`) looking like an escaped newline; `--json`
//! is the exact form.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`escape_control`].
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every control character (and line separator or bidi
/// formatting character) replaced by a visible escape; borrowed when there
/// is nothing to escape.
///
/// ```
/// use stowage::text::escape_control;
/// assert_eq!(escape_control("plain"), "plain");
/// assert_eq!(escape_control("a\nb\t\u{1b}[31m"), "a\\nb\\t\\u{1b}[31m");
/// ```
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(escape_control(input), expected, "{input:?}");
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        check("model-1 é✓", "model-1 é✓");
        check("a\nb", "a\\nb");
        check("\r\t", "\\r\\t");
        check("\0", "\\u{0}");
        check("\u{7f}\u{85}", "\\u{7f}\\u{85}");
        check("x\u{202e}gpj.exe", "x\\u{202e}gpj.exe");
        check("line\u{2028}sep", "line\\u{2028}sep");
        check("back\\slash", "back\\slash");
    }

    #[test]
    fn clean_text_is_borrowed() {
        assert!(matches!(escape_control("clean"), Cow::Borrowed(_)));
    }
}
