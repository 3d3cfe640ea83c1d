//! The stored form of a class source: validation of what comes in, the one
//! `source` blob and its metadata, and the WIRE rendering.
//!
//! Invariants: the blob is the input bytes, unchanged; nothing is written
//! to the sink before every check passed.

use stowage_plugin_api::{encodings, Blobs, Kind, Metadata, MetadataRef, PluginError, Sink};

use crate::error::ValidationError;
use crate::{scan, validate};

/// The encoding's format version.
pub const ENCODING_VERSION: u32 = 1;
/// The one blob of an artifact.
pub const SOURCE_BLOB: &str = "source";

/// Validates a source and its names, writes the `source` blob and returns
/// the metadata. `qualname` defaults to the class's own name.
pub(crate) fn store(
    source: &[u8],
    qualname: Option<&str>,
    module: Option<&str>,
    sink: &mut Sink<'_>,
) -> Result<Metadata, PluginError> {
    let invalid = |e: ValidationError| PluginError::invalid_input(e.to_string());
    let info = validate::class_source(source).map_err(invalid)?;
    let qualname = qualname.unwrap_or(info.class_name);
    validate::qualname(qualname).map_err(invalid)?;
    validate::name_matches(info.class_name, qualname).map_err(invalid)?;
    if let Some(module) = module {
        validate::module(module).map_err(invalid)?;
    }
    sink.blob(SOURCE_BLOB, source)?;
    let mut meta = Metadata::new(
        Kind::ClassSource.name(),
        encodings::PYTHON_CLASS_SOURCE,
        ENCODING_VERSION,
    )
    .info("qualname", qualname);
    if let Some(module) = module {
        meta = meta.info("module", module);
    }
    Ok(meta
        .info("size", source.len().to_string())
        .info("lines", info.lines.to_string()))
}

/// The stored source (UTF-8) and qualname of an artifact.
pub(crate) fn stored<'a>(
    meta: &MetadataRef<'a>,
    blobs: &Blobs<'a>,
) -> Result<(&'a str, &'a str), PluginError> {
    let data = blobs
        .get(SOURCE_BLOB)
        .ok_or_else(|| PluginError::invalid_input("missing blob `source`"))?;
    let source = std::str::from_utf8(data)
        .map_err(|_| PluginError::invalid_input("stored class source is not UTF-8"))?;
    let qualname = meta
        .info("qualname")
        .ok_or_else(|| PluginError::invalid_input("metadata has no qualname"))?;
    Ok((source, qualname))
}

/// The WIRE rendering: qualname, module, line count, first line.
pub fn describe(source: &str, qualname: &str, module: Option<&str>) -> String {
    const FIRST_LINE_CHARS: usize = 100;
    let module = module
        .map(|m| format!(" in module {m}"))
        .unwrap_or_default();
    let lines = scan::line_count(source);
    let first = source
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut shown: String = first.chars().take(FIRST_LINE_CHARS).collect();
    if first.chars().count() > FIRST_LINE_CHARS {
        shown.push('…');
    }
    let plural = if lines == 1 { "" } else { "s" };
    format!(
        "python class {qualname}{module}: {lines} line{plural}, {} bytes\n  {shown}",
        source.len()
    )
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use stowage_plugin_api::testing::PluginTest;
    use stowage_plugin_api::{ClassSource, ErrorKind, Plugin, Value};

    use crate::ClassSourcePlugin;

    const POINT: &str = "@dataclass(frozen=True)\r\nclass Point:\r\n    x: int\r\n    y: int";

    fn class(qualname: &str, module: Option<&str>, source: &str) -> Value<'static> {
        Value::ClassSource(ClassSource {
            qualname: Cow::Owned(qualname.to_owned()),
            module: module.map(|m| Cow::Owned(m.to_owned())),
            source: Cow::Owned(source.to_owned()),
        })
    }

    #[test]
    fn values_round_trip_byte_exact_with_metadata() {
        let test = PluginTest::new(ClassSourcePlugin);
        let stored = test
            .serialize(&mut class("geo.Point", Some("__main__"), POINT), &[])
            .expect("stores");
        assert_eq!(
            stored.blobs,
            vec![("source".to_owned(), POINT.as_bytes().to_vec())]
        );
        let info = &stored.metadata;
        let expected = stowage_plugin_api::Metadata::new(
            "class_source",
            stowage_plugin_api::encodings::PYTHON_CLASS_SOURCE,
            1,
        )
        .info("qualname", "geo.Point")
        .info("module", "__main__")
        .info("size", POINT.len().to_string())
        .info("lines", "4");
        assert_eq!(info, &expected);
        let back = test
            .deserialize(&stored.metadata, &stored.blobs)
            .expect("loads");
        let Value::ClassSource(back) = back else {
            panic!("not a class source: {back:?}");
        };
        assert_eq!(
            (
                back.qualname.as_ref(),
                back.module.as_deref(),
                back.source.as_ref()
            ),
            ("geo.Point", Some("__main__"), POINT)
        );
        assert_eq!(
            test.export(&stored.metadata, &stored.blobs)
                .expect("exports"),
            POINT.as_bytes()
        );
        assert_eq!(
            test.describe(&stored.metadata, &stored.blobs).expect("describes"),
            "python class geo.Point in module __main__: 4 lines, 61 bytes\n  @dataclass(frozen=True)"
        );
    }

    #[test]
    fn files_ingest_with_a_default_or_given_qualname() {
        let test = PluginTest::new(ClassSourcePlugin);
        let source = b"class A: pass";
        let stored = test.ingest(source, &[]).expect("ingests");
        assert_eq!(stored.blobs, vec![("source".to_owned(), source.to_vec())]);
        assert!(stored.metadata == meta("A", None, source.len(), 1));
        let stored = test
            .ingest(source, &[("qualname", "outer.A"), ("module", "pkg.mod")])
            .expect("ingests");
        assert!(stored.metadata == meta("outer.A", Some("pkg.mod"), 13, 1));
        assert_eq!(
            test.describe(&stored.metadata, &stored.blobs)
                .expect("describes"),
            "python class outer.A in module pkg.mod: 1 line, 13 bytes\n  class A: pass"
        );
    }

    fn meta(
        qualname: &str,
        module: Option<&str>,
        size: usize,
        lines: usize,
    ) -> stowage_plugin_api::Metadata {
        let mut meta = stowage_plugin_api::Metadata::new(
            "class_source",
            stowage_plugin_api::encodings::PYTHON_CLASS_SOURCE,
            1,
        )
        .info("qualname", qualname);
        if let Some(module) = module {
            meta = meta.info("module", module);
        }
        meta.info("size", size.to_string())
            .info("lines", lines.to_string())
    }

    #[test]
    fn refusals_are_invalid_input_and_write_nothing() {
        let test = PluginTest::new(ClassSourcePlugin);
        type Case<'a> = (&'a [u8], &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case<'_>; 4] = [
            (
                b"import os\nclass A: pass",
                &[],
                "line 1: the first statement is `import`, not a class; class-source stores one class definition as inspect.getsource returns it",
            ),
            (b"class A: pass", &[("qualname", "m.B")], "class is named `A` but the qualname `m.B` ends in `B`"),
            (b"class A: pass", &[("qualname", "a.<locals>.A")], "qualname `a.<locals>.A` is not dotted Python identifiers (bad part `<locals>`)"),
            (b"class A: pass", &[("qualname", "if.A")], "qualname `if.A` contains the keyword `if`"),
        ];
        for (file, options, message) in cases {
            let error = test.ingest(file, options).expect_err("refused");
            assert_eq!(
                (error.kind, error.message.as_str()),
                (ErrorKind::InvalidInput, message)
            );
        }
        let error = test
            .serialize(&mut class("A", Some(""), "class A: pass"), &[])
            .expect_err("refused");
        assert_eq!(error.kind, ErrorKind::InvalidInput);
    }

    #[test]
    fn sniff_claims_python_class_files_only() {
        let plugin = ClassSourcePlugin;
        assert!(plugin.sniff(POINT.as_bytes()));
        assert!(plugin.sniff(b"import os\n\nclass A:\n    pass\n"));
        // A prefix cut inside a character or a string still sniffs.
        assert!(plugin.sniff("class Ü:\n    x = '''é".as_bytes()));
        assert!(plugin.sniff(&"class A:\n    x = 'é'".as_bytes()[..18]));
        assert!(!plugin.sniff(b"class A:\0"));
        assert!(!plugin.sniff(b"\xff\xfeclass A: pass"));
        assert!(!plugin.sniff(b"{\"class\": \"A\"}"));
        assert!(!plugin.sniff(b"ECHO\nclass"));
        assert!(!plugin.sniff(b""));
    }

    #[test]
    fn other_encodings_and_versions_are_declined() {
        let test = PluginTest::new(ClassSourcePlugin);
        let stored = test.ingest(b"class A: pass", &[]).expect("ingests");
        let other = stowage_plugin_api::Metadata::new("class_source", "python-class-source", 2)
            .info("qualname", "A");
        let error = test
            .deserialize(&other, &stored.blobs)
            .expect_err("declined");
        assert_eq!(error.kind, ErrorKind::Unsupported);
    }
}
