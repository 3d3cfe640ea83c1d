//! The class-source serializer plugin: a Python class stored as its source
//! text — what `inspect.getsource(cls)` returns, decorators included — plus
//! its qualified name, so a process that cannot import the class (it was
//! defined in `__main__`, a notebook or a script) can rebuild it by running
//! the source. stowage stores and validates the source; it never executes,
//! imports or evaluates it, and this library spawns no process and links no
//! Python.
//!
//! - Value kind: `class_source` (qualname, optional module, source).
//! - Encoding: `python-class-source`, version 1: one blob, `source`, holding
//!   the source byte-exact. `serializer_info` holds `qualname`, `module`
//!   (when known), `size` (bytes) and `lines` (physical lines).
//! - Standard file: the `.py` file of the class itself; `stowage put NAME
//!   cls.py [--qualname a.B] [--opt module=m]` stores it (the qualname
//!   defaults to the class's own name) and `stowage get NAME -o x.py`
//!   writes the same bytes back.
//! - Validated, each with its own [`ValidationError`]: at most
//!   [`MAX_SOURCE_BYTES`] (1 MiB); not empty or whitespace only; UTF-8; no
//!   NUL; dedented; after blank lines, comments and decorators the first
//!   statement is a `class` statement with a name, a `:` and a body, and no
//!   top-level statement follows it; strings, comments, brackets and
//!   backslash continuations are tokenized (see [`scan`]) so a docstring
//!   mentioning `class` fools nothing; the qualname is dotted identifiers
//!   without keywords and ends in the class name, compared under NFKC.
//!
//! Decision: `sniff` claims text without NUL bytes (UTF-8, or with invalid
//! bytes, read lossily) in which some logical line starts `class NAME` (at
//! any indentation), not only files that validate: a module with imports before its class is then refused by
//! `ingest` with a message saying what class-source stores, instead of the
//! host's bare "no plugin recognises this file". Other plugins sniff binary
//! formats and the fallback never sniffs, so nothing else is shadowed.
//!
//! ```
//! use stowage_class_source::validate;
//!
//! let info = validate::class_source(b"@dataclass\nclass Point:\n    x: int\n").unwrap();
//! assert_eq!((info.class_name, info.lines), ("Point", 3));
//! assert!(validate::class_source(b"import os\nclass A: pass").is_err());
//! ```

#![deny(unsafe_code)]

mod artifact;
pub mod error;
pub mod scan;
pub mod validate;

use std::borrow::Cow;

use stowage_plugin_api::{
    encodings, export_plugin, Blobs, ClassSource, Declaration, Kind, Metadata, MetadataRef,
    Options, Plugin, PluginError, Sink, Value, ValueRef,
};

use artifact::{store, stored};

pub use artifact::{describe, ENCODING_VERSION, SOURCE_BLOB};
pub use error::ValidationError;
pub use validate::MAX_SOURCE_BYTES;

/// The class-source plugin.
#[derive(Debug, Default)]
pub struct ClassSourcePlugin;

impl Plugin for ClassSourcePlugin {
    fn declaration(&self) -> Declaration {
        Declaration::new("class-source")
            .priority(100)
            .kinds([Kind::ClassSource])
            .encoding(encodings::PYTHON_CLASS_SOURCE)
            .options(["qualname", "module"])
    }

    fn can_serialize(&self, value: &ValueRef<'_>) -> bool {
        matches!(value, ValueRef::ClassSource(_))
    }

    fn serialize(
        &self,
        value: &ValueRef<'_>,
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        let ValueRef::ClassSource(class) = value else {
            return Err(PluginError::unsupported(
                "class-source stores only class_source values",
            ));
        };
        let module = class.module().or(options.get("module"));
        store(class.source_bytes(), Some(class.qualname()), module, sink)
    }

    fn can_deserialize(&self, meta: &MetadataRef<'_>) -> bool {
        meta.encoding() == encodings::PYTHON_CLASS_SOURCE
            && meta.encoding_version() == ENCODING_VERSION
    }

    fn deserialize<'a>(
        &self,
        meta: &MetadataRef<'a>,
        blobs: &Blobs<'a>,
    ) -> Result<Value<'a>, PluginError> {
        let (source, qualname) = stored(meta, blobs)?;
        Ok(Value::ClassSource(ClassSource {
            qualname: Cow::Borrowed(qualname),
            module: meta.info("module").map(Cow::Borrowed),
            source: Cow::Borrowed(source),
        }))
    }

    fn sniff(&self, prefix: &[u8]) -> bool {
        if prefix.contains(&0) {
            return false;
        }
        // Text with an invalid byte is still claimed when it has a class
        // statement, so `ingest` says the source is not UTF-8 (and where)
        // instead of the host's bare "no plugin recognises this file". A
        // prefix may also cut the last character in two.
        validate::mentions_class(&String::from_utf8_lossy(prefix))
    }

    fn ingest(
        &self,
        file: &[u8],
        options: &Options<'_>,
        sink: &mut Sink<'_>,
    ) -> Result<Metadata, PluginError> {
        store(file, options.get("qualname"), options.get("module"), sink)
    }

    fn export(
        &self,
        meta: &MetadataRef<'_>,
        blobs: &Blobs<'_>,
        out: &mut Sink<'_>,
    ) -> Result<(), PluginError> {
        let (source, _) = stored(meta, blobs)?;
        out.blob("file", source.as_bytes())
    }

    fn describe(&self, meta: &MetadataRef<'_>, blobs: &Blobs<'_>) -> Result<String, PluginError> {
        let (source, qualname) = stored(meta, blobs)?;
        Ok(describe(source, qualname, meta.info("module")))
    }
}

export_plugin!(ClassSourcePlugin);
