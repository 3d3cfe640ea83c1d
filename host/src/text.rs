//! Text shown to people: [`escape_control`], the one place that makes a
//! value safe to print in a line- or column-oriented layout, and
//! [`quote_capped`], the same escaping with a length cap for what errors
//! quote.
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
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// `text` as errors quote it: escaped as [`escape_control`] does, and at
/// most `max_chars` characters of that, a longer text cut (never inside an
/// escape) and marked `… (N bytes)` with its full length. Every error
/// quoting user- or plugin-supplied text of unbounded length (option keys
/// and values, names, plugin messages, JSON literals) goes through this.
///
/// ```
/// use stowage::text::quote_capped;
/// assert_eq!(quote_capped("a\tb", 80), "a\\tb");
/// assert_eq!(quote_capped("ab\ncd", 3), "ab… (5 bytes)");
/// ```
pub fn quote_capped(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut piece = String::new();
    let mut chars = 0;
    for c in text.chars() {
        piece.clear();
        push_escaped(&mut piece, c);
        chars += piece.chars().count();
        if chars > max_chars {
            let _ = write!(out, "… ({} bytes)", text.len());
            return out;
        }
        out.push_str(&piece);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_capped_escapes_controls_and_cuts_with_the_full_length() {
        assert_eq!(quote_capped("plain", 80), "plain");
        assert_eq!(quote_capped("a\tb\u{1b}", 80), "a\\tb\\u{1b}");
        assert_eq!(quote_capped("ééééé", 3), "ééé… (10 bytes)");
        assert_eq!(quote_capped("ab\ncd", 3), "ab… (5 bytes)");
        assert_eq!(quote_capped(&"x".repeat(80), 80), "x".repeat(80));
    }

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
