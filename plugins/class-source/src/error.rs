//! Why a class source or its names were refused: one variant per check, each
//! carrying what its one-line, lowercase message needs. The plugin turns any
//! of them into `PluginError::invalid_input(error.to_string())`.
//!
//! Line numbers are 1-based physical lines (`\n`, `\r\n` and a lone `\r` each
//! end one), as Python and editors count them.

/// What class-source stores, repeated in every "not a class" message so a user
/// who handed over a whole module learns what to hand over instead.
pub const WHAT_IS_STORED: &str =
    "class-source stores one class definition as inspect.getsource returns it";

/// A class source, qualname or module that class-source refuses.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The source is longer than [`crate::MAX_SOURCE_BYTES`].
    #[error("class source is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The source's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The source is empty or only whitespace.
    #[error("class source is empty or only whitespace")]
    Empty,
    /// The source is not valid UTF-8.
    #[error("class source is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },
    /// The source contains a NUL byte.
    #[error("class source contains a NUL byte on line {line}")]
    NulByte {
        /// Line of the first NUL.
        line: usize,
    },
    /// The first statement is indented: the source was not dedented.
    #[error("line {line}: the class source is indented; dedent it first (textwrap.dedent)")]
    NotDedented {
        /// Line of the indented statement.
        line: usize,
    },
    /// Only blank lines and comments: no statement at all.
    #[error("class source has no statement, only comments; {WHAT_IS_STORED}")]
    NoStatement,
    /// The first statement (after decorators) is not a `class` statement.
    #[error("line {line}: the first statement is `{found}`, not a class; {WHAT_IS_STORED}")]
    NotAClass {
        /// Line of the offending statement.
        line: usize,
        /// Its first word or character (`import`, `def`, `x`, …), or
        /// `end of file` when decorators decorate nothing.
        found: String,
    },
    /// `class` is not followed by a name (or is followed by a keyword).
    #[error("line {line}: `class` is not followed by a class name")]
    MissingClassName {
        /// Line of the class statement.
        line: usize,
    },
    /// The class statement has no `:` ending its header.
    #[error("line {line}: the class statement has no `:`")]
    MissingColon {
        /// Line of the class statement.
        line: usize,
    },
    /// `class A:` is followed by no indented body.
    #[error("line {line}: the class statement has no indented body")]
    MissingBody {
        /// Line of the class statement.
        line: usize,
    },
    /// A statement follows the class definition at top level.
    #[error("line {line}: a statement follows the class definition; {WHAT_IS_STORED}")]
    TrailingStatement {
        /// Line of the trailing statement.
        line: usize,
    },
    /// A string literal is not closed.
    #[error("line {line}: unterminated string literal")]
    UnterminatedString {
        /// Line where the string starts.
        line: usize,
    },
    /// A bracket is still open at the end of the source.
    #[error("line {line}: bracket opened here is never closed")]
    UnclosedBracket {
        /// Line of the outermost unclosed bracket.
        line: usize,
    },
    /// f-strings nested deeper than the scanner follows.
    #[error("line {line}: f-strings nested more than {limit} deep")]
    TooDeeplyNested {
        /// Line where the limit was hit.
        line: usize,
        /// The nesting limit.
        limit: usize,
    },
    /// The class name differs from the last part of the qualname (under NFKC).
    #[error("class is named `{class_name}` but the qualname `{qualname}` ends in `{last}`")]
    NameMismatch {
        /// The name in the class statement.
        class_name: String,
        /// The qualname given.
        qualname: String,
        /// Its last dotted part.
        last: String,
    },
    /// A part of the qualname is not a Python identifier.
    #[error("qualname `{qualname}` is not dotted Python identifiers (bad part `{part}`)")]
    InvalidQualname {
        /// The qualname given.
        qualname: String,
        /// The first bad part (possibly empty).
        part: String,
    },
    /// A part of the qualname is a Python keyword.
    #[error("qualname `{qualname}` contains the keyword `{keyword}`")]
    QualnameKeyword {
        /// The qualname given.
        qualname: String,
        /// The keyword.
        keyword: String,
    },
    /// The module name is empty or contains a control character.
    #[error("module name {module:?} is empty or contains a control character")]
    InvalidModule {
        /// The module name given.
        module: String,
    },
}
