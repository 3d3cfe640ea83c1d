//! The host's import graph: no circle among its files.
//!
//! Each crate of the host package (the library from `lib.rs`, the binary
//! from `main.rs`) is read file by file, following `mod NAME;` lines. Every
//! path that starts with `crate::`, `super::` or `self::` is an edge to the
//! file that defines what it names, wherever it stands: grouped `use` lines
//! (`use crate::{a::b, c::{d, e}}`) are expanded, and inline paths in code
//! (`crate::loader::host_interface()`) count as much as `use` lines. A path
//! to an item a module re-exports (`crate::config::Config`, which
//! `config/mod.rs` takes from `read.rs`) is followed to the file it comes
//! from, so a circle through a re-export is not hidden behind the `mod.rs`.
//! Comments, string and char literals and inline `#[cfg(test)] mod NAME {
//! … }` blocks are left out (a test module's `super` is its own file).
//!
//! Decision: a module naming its own subtree (`mod x; use x::Y;`,
//! `self::x::Y`, or `crate::…` down into itself) is containment, not an
//! import, however it is spelled: a parent is built from its children. So
//! the crate root and each `mod.rs` have no edges into their own subtree,
//! and a child's `super::` path to an item its parent defines is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The module tree of one crate: module path (`["store", "index"]`) → file,
/// and what each module brings in with `use` (local name → absolute path).
struct Crate {
    modules: BTreeMap<Vec<String>, PathBuf>,
    uses: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
}

impl Crate {
    /// Follows `mod NAME;` declarations from the crate root `root`.
    fn read(root: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut texts = BTreeMap::new();
        let mut children: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        let mut todo = vec![(Vec::new(), root.to_owned())];
        while let Some((path, file)) = todo.pop() {
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let text = strip(&text);
            let dir = if path.is_empty() || file.ends_with("mod.rs") {
                file.parent().map(Path::to_owned)
            } else {
                file.with_extension("").into()
            };
            let dir = dir.unwrap_or_else(|| panic!("{} has no directory", file.display()));
            for child in declared_modules(&text) {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(&child).join("mod.rs");
                let child_file = if flat.is_file() { flat } else { nested };
                assert!(
                    child_file.is_file(),
                    "{} declares mod {child}, found in neither {child}.rs nor {child}/mod.rs",
                    file.display()
                );
                let mut child_path = path.clone();
                child_path.push(child.clone());
                children.entry(path.clone()).or_default().push(child);
                todo.push((child_path, child_file));
            }
            modules.insert(path.clone(), file);
            texts.insert(path, text);
        }
        let mut uses = BTreeMap::new();
        for (module, text) in &texts {
            let own_children = children.get(module).map(Vec::as_slice).unwrap_or_default();
            let mut names = BTreeMap::new();
            for (path, name) in use_items(text) {
                let absolute = match path.first() {
                    // A bare path into a child module (`use read::Config`).
                    Some(first) if own_children.contains(first) => {
                        Some(module.iter().chain(&path).cloned().collect())
                    }
                    _ => absolute(module, &path),
                };
                if let Some(absolute) = absolute {
                    names.insert(name, absolute);
                }
            }
            uses.insert(module.clone(), names);
        }
        Crate { modules, uses }
    }

    /// The file that defines what `path` (absolute segments) names: the
    /// deepest module it names, or, when that module re-exports the next
    /// segment, the file that segment comes from.
    fn file_of(&self, path: &[String], hops: usize) -> Option<&PathBuf> {
        let len = (0..=path.len())
            .rev()
            .find(|&len| self.modules.contains_key(&path[..len]))?;
        let module = &path[..len];
        let reexport = path
            .get(len)
            .and_then(|name| self.uses.get(module)?.get(name));
        if let Some(target) = reexport.filter(|_| hops < 16) {
            let mut next = target.clone();
            next.extend(path[len + 1..].iter().cloned());
            if let Some(file) = self.file_of(&next, hops + 1) {
                return Some(file);
            }
        }
        self.modules.get(module)
    }

    /// File → files it imports.
    fn edges(&self) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
        let mut edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
        for (module, file) in &self.modules {
            let text = strip(&fs::read_to_string(file).unwrap_or_default());
            let targets = edges.entry(file.clone()).or_default();
            for path in relative_paths(&text) {
                let Some(absolute) = absolute(module, &path) else {
                    continue;
                };
                if absolute.starts_with(module) {
                    continue; // containment (module docs)
                }
                if let Some(target) = self.file_of(&absolute, 0) {
                    if target != file {
                        targets.insert(target.clone());
                    }
                }
            }
        }
        edges
    }
}

/// `crate::a::b` / `super::a` / `self::a` from module `module`, as absolute
/// segments.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => module.to_vec(),
        "super" => module.get(..module.len().checked_sub(1)?)?.to_vec(),
        _ => return None,
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(h, t)| (h.as_str(), t)) {
        base.pop()?;
        rest = tail;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Source text without comments, string and char literals, and inline
/// `#[cfg(test)] mod NAME { … }` blocks.
fn strip(text: &str) -> String {
    without_test_blocks(&without_literals(text))
}

/// `text` without comments (nested block comments too) and with every
/// string literal (raw ones with any number of `#`) reduced to `""` and
/// every char literal removed, so braces and paths inside them are gone.
fn without_literals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += block_comment(rest);
        } else if let Some(len) = raw_string(rest).filter(|_| starts_a_token(&out)) {
            i += len;
            out.push_str("\"\"");
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if let Some(len) = char_literal(rest) {
            i += len;
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Whether a literal starting after `before` begins a token: not inside an
/// identifier, except the `b`/`c` prefix of `br"…"`/`cr"…"`.
fn starts_a_token(before: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let tail: String = before.chars().rev().take_while(|&c| ident(c)).collect();
    tail.is_empty() || tail == "b" || tail == "c"
}

/// Length of the (possibly nested) block comment at the start of `rest`.
fn block_comment(rest: &str) -> usize {
    let mut depth = 0;
    let mut j = 0;
    while j < rest.len() {
        if rest[j..].starts_with("/*") {
            depth += 1;
            j += 2;
        } else if rest[j..].starts_with("*/") {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += rest[j..].chars().next().map_or(1, char::len_utf8);
        }
    }
    rest.len()
}

/// Length of a raw string literal (`r"…"`, `r#"…"#`, `r##"…"##`, …) at the
/// start of `rest`.
fn raw_string(rest: &str) -> Option<usize> {
    let after_r = rest.strip_prefix('r')?;
    let hashes = after_r.chars().take_while(|&c| c == '#').count();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let open = 1 + hashes + 1;
    Some(
        body.find(&close)
            .map_or(rest.len(), |end| open + end + close.len()),
    )
}

/// `text` (already without literals) without its inline
/// `#[cfg(test)] mod NAME { … }` blocks, wherever they stand (a test module
/// may sit inside an inline module, as in `main.rs`).
fn without_test_blocks(text: &str) -> String {
    const CFG_TEST: &str = "#[cfg(test)]";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(CFG_TEST) {
        out.push_str(&rest[..at]);
        let after = &rest[at + CFG_TEST.len()..];
        let item = after.trim_start();
        let opens_block = item.starts_with("mod ")
            && item
                .find(['{', ';'])
                .is_some_and(|end| item.as_bytes()[end] == b'{');
        if !opens_block {
            out.push_str(CFG_TEST);
            rest = after;
            continue;
        }
        let open = item.find('{').unwrap_or(0);
        let mut depth = 0usize;
        let mut close = item.len();
        for (j, c) in item.char_indices().skip(open) {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        close = j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[close..];
    }
    out.push_str(rest);
    out
}

/// Length of a char literal (`'a'`, `'\n'`, `'\''`, `'\u{1F600}'`) at the
/// start of `rest`; `None` for a lifetime.
fn char_literal(rest: &str) -> Option<usize> {
    let body = rest.strip_prefix('\'')?;
    if let Some(escaped) = body.strip_prefix('\\') {
        // The escaped character itself may be a quote (`'\''`).
        let first = escaped.chars().next()?.len_utf8();
        return escaped[first..]
            .find('\'')
            .map(|end| 1 + 1 + first + end + 1);
    }
    let c = body.chars().next()?;
    body[c.len_utf8()..]
        .starts_with('\'')
        .then_some(c.len_utf8() + 2)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Punct(char),
}

fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c.is_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(at, next)) = chars.peek() {
                if next.is_alphanumeric() || next == '_' {
                    end = at + next.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            out.push(Token::Ident(text[start..end].to_owned()));
        } else if c == ':' && chars.peek().is_some_and(|&(_, next)| next == ':') {
            chars.next();
            out.push(Token::PathSep);
        } else if !c.is_whitespace() {
            out.push(Token::Punct(c));
        }
    }
    out
}

/// Names of `mod NAME;` declarations (not inline `mod NAME { … }`).
fn declared_modules(text: &str) -> Vec<String> {
    let tokens = tokens(text);
    tokens
        .windows(3)
        .filter_map(|w| match w {
            [Token::Ident(kw), Token::Ident(name), Token::Punct(';')] if kw == "mod" => {
                Some(name.clone())
            }
            _ => None,
        })
        .collect()
}

/// Every `crate::`/`super::`/`self::` path: expanded `use` trees and inline
/// paths alike.
fn relative_paths(text: &str) -> Vec<Vec<String>> {
    let tokens = tokens(text);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Ident(kw) if kw == "use" => {
                let mut items = Vec::new();
                i = use_tree(&tokens, i + 1, &mut Vec::new(), &mut items);
                paths.extend(items.into_iter().map(|(path, _)| path));
            }
            Token::Ident(first)
                if matches!(first.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || tokens[i - 1] != Token::PathSep) =>
            {
                let mut path = vec![first.clone()];
                i += 1;
                while tokens.get(i) == Some(&Token::PathSep) {
                    match tokens.get(i + 1) {
                        Some(Token::Ident(segment)) => {
                            path.push(segment.clone());
                            i += 2;
                        }
                        _ => break,
                    }
                }
                paths.push(path);
            }
            _ => i += 1,
        }
    }
    paths
        .into_iter()
        .filter(|p| {
            p.first()
                .is_some_and(|f| matches!(f.as_str(), "crate" | "super" | "self"))
        })
        .collect()
}

/// Every path a `use` line brings in, with the name it takes in the module
/// (`use a::b as c` → `(["a", "b"], "c")`, `use a::{self}` → `(["a"], "a")`);
/// globs are left out.
fn use_items(text: &str) -> Vec<(Vec<String>, String)> {
    let tokens = tokens(text);
    let mut items = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if *token == Token::Ident("use".to_owned()) {
            use_tree(&tokens, i + 1, &mut Vec::new(), &mut items);
        }
    }
    items
        .into_iter()
        .filter_map(|(mut path, name)| {
            if path.last().is_some_and(|last| last == "self") {
                path.pop();
            }
            let name = name.or_else(|| path.last().cloned())?;
            (name != "_" && name != "*").then_some((path, name))
        })
        .collect()
}

/// Parses one use tree at `i` under `prefix` into `(path, alias)` items;
/// returns the index after it. A glob's path is its module's, aliased `*`.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &mut Vec<String>,
    items: &mut Vec<(Vec<String>, Option<String>)>,
) -> usize {
    let depth = prefix.len();
    let mut alias = None;
    loop {
        match tokens.get(i) {
            Some(Token::Ident(kw)) if kw == "as" => {
                if let Some(Token::Ident(name)) = tokens.get(i + 1) {
                    alias = Some(name.clone());
                }
                i += 2;
                break;
            }
            Some(Token::Ident(segment)) => {
                prefix.push(segment.clone());
                i += 1;
            }
            Some(Token::PathSep) => i += 1,
            Some(Token::Punct('{')) => {
                i += 1;
                while tokens.get(i).is_some_and(|t| *t != Token::Punct('}')) {
                    let before = i;
                    i = use_tree(tokens, i, prefix, items);
                    if tokens.get(i) == Some(&Token::Punct(',')) {
                        i += 1;
                    } else if i == before {
                        break;
                    }
                }
                prefix.truncate(depth);
                return i + 1;
            }
            Some(Token::Punct('*')) => {
                alias = Some("*".to_owned());
                i += 1;
                break;
            }
            _ => break,
        }
    }
    if prefix.len() > depth {
        items.push((prefix.clone(), alias));
    }
    prefix.truncate(depth);
    i
}

/// The circles of a graph (strongly connected components of more than one
/// file), each as a sorted list.
fn circles(edges: &BTreeMap<PathBuf, BTreeSet<PathBuf>>) -> Vec<Vec<PathBuf>> {
    let nodes: Vec<&PathBuf> = edges.keys().collect();
    let reaches = |from: &PathBuf, to: &PathBuf| -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(node) = todo.pop() {
            if node == to {
                return true;
            }
            if seen.insert(node) {
                todo.extend(edges.get(node).into_iter().flatten());
            }
        }
        false
    };
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for &node in &nodes {
        if assigned.contains(node) {
            continue;
        }
        let circle: Vec<PathBuf> = nodes
            .iter()
            .filter(|&&other| other == node || (reaches(node, other) && reaches(other, node)))
            .map(|&p| p.clone())
            .collect();
        for member in &circle {
            assigned.insert(member.clone());
        }
        if circle.len() > 1 {
            out.push(circle);
        }
    }
    out
}

/// The circles of the host crate rooted at `root`, as paths relative to
/// `host/src`.
pub fn host_circles(root: &Path) -> Vec<Vec<String>> {
    let src = root.parent().unwrap_or(root).to_owned();
    circles(&Crate::read(root).edges())
        .into_iter()
        .map(|circle| {
            circle
                .iter()
                .map(|p| p.strip_prefix(&src).unwrap_or(p).display().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn use_trees_and_inline_paths_are_all_read() {
    let text = strip(
        "use crate::{a::{b, c as d}, e::*};\n\
         use super::f;\n\
         // crate::in_comment::x\n\
         fn g() { let s = \"crate::in_string\"; crate::h::i(); super::super::j::k(); }\n\
         #[cfg(test)]\nmod tests { use crate::only_in_tests; }\n",
    );
    let paths: Vec<String> = relative_paths(&text)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "crate::a::b",
            "crate::a::c",
            "crate::e",
            "super::f",
            "crate::h::i",
            "super::super::j::k"
        ]
    );
}

#[test]
fn a_circle_is_found() {
    let edge = |from: &str, to: &[&str]| {
        (
            PathBuf::from(from),
            to.iter().map(PathBuf::from).collect::<BTreeSet<_>>(),
        )
    };
    let edges: BTreeMap<PathBuf, BTreeSet<PathBuf>> = [
        edge("config.rs", &["fallback.rs"]),
        edge("fallback.rs", &["loader/mod.rs"]),
        edge("loader/mod.rs", &["config.rs", "value.rs"]),
        edge("value.rs", &[]),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        circles(&edges),
        [vec![
            PathBuf::from("config.rs"),
            PathBuf::from("fallback.rs"),
            PathBuf::from("loader/mod.rs")
        ]]
    );
}

#[test]
fn literals_comments_and_test_blocks_hide_paths_but_not_the_code_after_them() {
    let text = strip(
        "let a = r##\"crate::in_raw::x \"# still raw\"##; crate::after_raw::x();\n\
         let q = '\\''; crate::after_quote::x();\n\
         /* outer /* inner crate::nested::x */ crate::still_comment::x */ crate::after_comment::x();\n\
         mod inline {\n\
             fn f() {}\n\
             #[cfg(test)]\n\
             mod tests { fn t() { let b = \"}\"; crate::only_in_tests::x(); } }\n\
         }\n\
         #[cfg(test)]\nuse crate::test_only_use;\n\
         mod other { fn g() { crate::after_tests::x(); } }\n",
    );
    let paths: Vec<String> = relative_paths(&text)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        paths,
        [
            "crate::after_raw::x",
            "crate::after_quote::x",
            "crate::after_comment::x",
            "crate::test_only_use",
            "crate::after_tests::x"
        ]
    );
}

#[test]
fn a_reexport_is_followed_and_a_module_naming_its_own_children_is_no_edge() {
    let dir = std::env::temp_dir().join(format!("stowage-tidy-imports-{}", std::process::id()));
    let files = [
        ("lib.rs", "//! root\nmod a;\nmod b;\npub use a::Thing;\n"),
        (
            "a/mod.rs",
            "//! a\nmod inner;\npub use inner::Thing;\nuse self::inner::Other;\npub fn shared() {}\n",
        ),
        (
            "a/inner.rs",
            "//! inner\nuse super::shared;\nuse crate::b::helper;\npub struct Thing;\npub struct Other;\n",
        ),
        ("b.rs", "//! b\nuse crate::a::Thing;\npub fn helper() {}\n"),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        fs::create_dir_all(path.parent().expect("a file in a directory"))
            .expect("the temp directory is writable");
        fs::write(&path, text).expect("the temp file is writable");
    }
    let circles = host_circles(&dir.join("lib.rs"));
    fs::remove_dir_all(&dir).expect("the temp directory is removable");
    // b.rs names `crate::a::Thing`, which a/mod.rs takes from a/inner.rs:
    // the circle is inner ↔ b. a/mod.rs names its own child
    // (`self::inner::Other`), which is containment, so inner's `super::shared`
    // does not pull it into the circle.
    assert_eq!(circles, [vec!["a/inner.rs".to_owned(), "b.rs".to_owned()]]);
}
