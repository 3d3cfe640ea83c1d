//! Validation, data-driven: `valid(source, class_name)` for the forms that
//! must pass, one test per [`ValidationError`] variant asserting it with
//! `matches!`.

use super::*;

#[track_caller]
fn valid(source: &str, class_name: &str) {
    match class_source(source.as_bytes()) {
        Ok(info) => assert_eq!(info.class_name, class_name, "{source:?}"),
        Err(error) => panic!("refused ({error}):\n{source}"),
    }
}

#[track_caller]
fn refused(source: &[u8]) -> ValidationError {
    match class_source(source) {
        Ok(info) => panic!(
            "accepted as {}: {:?}",
            info.class_name,
            String::from_utf8_lossy(source)
        ),
        Err(error) => {
            let message = error.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            assert_eq!(
                message,
                message.to_lowercase_first(),
                "lowercase: {message}"
            );
            error
        }
    }
}

trait LowercaseFirst {
    fn to_lowercase_first(&self) -> String;
}

impl LowercaseFirst for String {
    fn to_lowercase_first(&self) -> String {
        let mut chars = self.chars();
        match chars.next() {
            Some(c) => c.to_lowercase().chain(chars).collect(),
            None => String::new(),
        }
    }
}

#[test]
fn realistic_classes_are_valid() {
    valid("class A: pass", "A");
    valid("class A:\n    pass\n", "A");
    valid(
        "\n\n# leading comment\n#another\nclass A:\n    x = 1\n",
        "A",
    );
    valid(
        "@dataclass\nclass Point:\n    x: int\n    y: int = 0\n",
        "Point",
    );
    valid(
        "@decorate(\n    a=1,\n    b=[2, 3],\n)\n@other\nclass D(Base, metaclass=Meta):\n    pass\n",
        "D",
    );
    valid(
        "class Doc:\n    \"\"\"A docstring saying\nclass Fake:\nimport os\n\"\"\"\n    def f(self):\n        return 'class X'\n",
        "Doc",
    );
    valid("class T:\n\tdef f(self):\n\t\treturn 1\n", "T");
    valid("class C:\r\n    x = 1\r\n\r\n    y = 2\r\n", "C");
    valid("class L:\n    total = 1 + \\\n        2\n", "L");
    valid("class Box[T]:\n    def get(self) -> T: ...\n", "Box");
    valid("class Pair[K: str, *Ts, **P](Generic):\n    pass\n", "Pair");
    valid(
        "class Outer:\n    class Inner:\n        class Deepest:\n            pass\n    x = Inner()\n",
        "Outer",
    );
    valid(
        "class Client:\n    async def fetch(self):\n        async with s:\n            await g()\n",
        "Client",
    );
    valid(
        "class Multi(\n    Base,\n):\n    pass\n# trailing comment\n\n",
        "Multi",
    );
    valid(
        "class F:\n    def show(self):\n        return f\"{self.d[\"k\"]:>{w}} {{x}}\"\n",
        "F",
    );
    valid("class Ünïcode:\n    pass\n", "Ünïcode");
    valid("class A: x = 1; y = 2\n", "A");
    valid("class A:  # comment with class B:\n    pass\n", "A");
    valid("\u{feff}class Bom:\n    pass\n", "Bom");
}

#[test]
fn too_large() {
    let mut source = b"class A:\n    pass\n".to_vec();
    source.resize(MAX_SOURCE_BYTES + 1, b'#');
    assert!(matches!(
        refused(&source),
        ValidationError::TooLarge { size, limit: MAX_SOURCE_BYTES } if size == MAX_SOURCE_BYTES + 1
    ));
}

#[test]
fn empty_or_whitespace_only() {
    assert!(matches!(refused(b""), ValidationError::Empty));
    assert!(matches!(refused(b" \n\t\r\n  "), ValidationError::Empty));
}

#[test]
fn not_utf8() {
    assert!(matches!(
        refused(b"class A:\n    x = '\xff'\n"),
        ValidationError::NotUtf8 { offset: 18 }
    ));
}

#[test]
fn nul_byte() {
    assert!(matches!(
        refused(b"class A:\n    x = '\0'\n"),
        ValidationError::NulByte { line: 2 }
    ));
}

#[test]
fn not_dedented() {
    assert!(matches!(
        refused(b"\n    class Inner:\n        pass\n"),
        ValidationError::NotDedented { line: 2 }
    ));
    assert!(matches!(
        refused(b"@d\n  class A:\n    pass\n"),
        ValidationError::NotDedented { line: 2 }
    ));
}

#[test]
fn only_comments() {
    assert!(matches!(
        refused(b"# class A:\n"),
        ValidationError::NoStatement
    ));
}

#[test]
fn import_first_is_not_a_class() {
    let error = refused(b"import os\n\nclass A:\n    pass\n");
    assert!(
        matches!(&error, ValidationError::NotAClass { line: 1, found } if found == "import"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "line 1: the first statement is `import`, not a class; \
         class-source stores one class definition as inspect.getsource returns it"
    );
    assert!(matches!(
        refused(b"from a import b\nclass A: pass"),
        ValidationError::NotAClass { found, .. } if found == "from"
    ));
    assert!(matches!(
        refused(b"\"\"\"module doc\"\"\"\nclass A: pass"),
        ValidationError::NotAClass { found, .. } if found == "\""
    ));
}

#[test]
fn other_statements_are_not_a_class() {
    assert!(matches!(
        refused(b"@decorator\ndef f():\n    pass\n"),
        ValidationError::NotAClass { line: 2, found } if found == "def"
    ));
    assert!(matches!(
        refused(b"x = 1\n"),
        ValidationError::NotAClass { line: 1, found } if found == "x"
    ));
    assert!(matches!(
        refused(b"@decorator\n"),
        ValidationError::NotAClass { found, .. } if found == "end of file"
    ));
}

#[test]
fn class_without_name() {
    assert!(matches!(
        refused(b"class :\n    pass\n"),
        ValidationError::MissingClassName { line: 1 }
    ));
    assert!(matches!(
        refused(b"class def:\n    pass\n"),
        ValidationError::MissingClassName { line: 1 }
    ));
}

#[test]
fn class_without_colon() {
    assert!(matches!(
        refused(b"class A(B\n, C)\n    pass\n"),
        ValidationError::MissingColon { line: 1 }
    ));
}

#[test]
fn class_without_body() {
    assert!(matches!(
        refused(b"class A:\n"),
        ValidationError::MissingBody { line: 1 }
    ));
    assert!(matches!(
        refused(b"class A:\nx = 1\n"),
        ValidationError::MissingBody { line: 1 }
    ));
}

#[test]
fn statement_after_the_class() {
    assert!(matches!(
        refused(b"class A:\n    pass\n\nif __name__ == '__main__':\n    A()\n"),
        ValidationError::TrailingStatement { line: 4 }
    ));
    assert!(matches!(
        refused(b"class A: pass\nclass B: pass\n"),
        ValidationError::TrailingStatement { line: 2 }
    ));
}

#[test]
fn unterminated_string() {
    assert!(matches!(
        refused(b"class A:\n    '''never closed\n"),
        ValidationError::UnterminatedString { line: 2 }
    ));
}

#[test]
fn unclosed_bracket() {
    assert!(matches!(
        refused(b"class A(B:\n    pass\n"),
        ValidationError::UnclosedBracket { line: 1 }
    ));
}

#[test]
fn nesting_too_deep() {
    let deep = format!(
        "class A:\n    x = f'{}{}'\n",
        "{f'".repeat(40),
        "'}".repeat(40)
    );
    assert!(matches!(
        refused(deep.as_bytes()),
        ValidationError::TooDeeplyNested { line: 2, .. }
    ));
}

#[test]
fn class_name_must_end_the_qualname() {
    assert!(name_matches("B", "a.B").is_ok());
    assert!(name_matches("B", "B").is_ok());
    // NFKC: the fullwidth and ligature forms are the same identifier.
    assert!(name_matches("\u{ff21}", "A").is_ok());
    assert!(name_matches("ﬁle", "file").is_ok());
    assert!(matches!(
        name_matches("B", "a.C"),
        Err(ValidationError::NameMismatch { class_name, last, .. }) if class_name == "B" && last == "C"
    ));
}

#[test]
fn qualname_must_be_dotted_identifiers() {
    assert!(qualname("Outer.Inner").is_ok());
    assert!(qualname("_private.Ünï2").is_ok());
    assert!(qualname("match.case.type._").is_ok());
    for bad in ["", "a..b", ".a", "a.", "1a", "f.<locals>.A", "a-b", "a b"] {
        assert!(
            matches!(qualname(bad), Err(ValidationError::InvalidQualname { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn qualname_must_not_hold_a_keyword() {
    assert!(matches!(
        qualname("a.class.B"),
        Err(ValidationError::QualnameKeyword { keyword, .. }) if keyword == "class"
    ));
    assert!(matches!(
        qualname("None"),
        Err(ValidationError::QualnameKeyword { keyword, .. }) if keyword == "None"
    ));
}

#[test]
fn module_names() {
    assert!(module("__main__").is_ok());
    assert!(module("<run_path>").is_ok());
    assert!(matches!(
        module(""),
        Err(ValidationError::InvalidModule { .. })
    ));
    assert!(matches!(
        module("a\nb"),
        Err(ValidationError::InvalidModule { .. })
    ));
}

#[test]
fn sniffing_finds_class_statements_only() {
    assert!(mentions_class("class A:\n    pass\n"));
    assert!(mentions_class("import os\n\nclass A(os.PathLike):\n"));
    assert!(mentions_class("    class Inner:\n"));
    assert!(!mentions_class("x = '''\nclass A:\n'''\n"));
    assert!(!mentions_class("# class A:\n"));
    assert!(!mentions_class("{\"class\": 1}"));
    assert!(!mentions_class("hello world\n"));
    assert!(!mentions_class("class\n"));
}
