//! Plugins built against other interface versions: the frozen 1.0 copy in
//! tests/fixtures/api-1.0 must keep working in this 1.1 host.

use stowage::{ArtifactMeta, Buffer, ClassSource, DispatchError, Error, State, Value};
use stowage_tests::{assert_state, status_of, TestDir};

fn legacy_host() -> (TestDir, stowage::Host) {
    let dir = TestDir::new("legacy");
    dir.install("legacy", "stowage_legacy");
    let host = dir.host();
    (dir, host)
}

#[test]
fn plugin_built_against_1_0_loads_and_serializes() {
    let (_dir, host) = legacy_host();
    assert_state(&host, "legacy", State::Active, None);
    assert_eq!(
        status_of(&host, "legacy").interface_version.as_deref(),
        Some("1.0.0")
    );
    let value = Value::List(vec![Value::String("a".into()), Value::String("b".into())]);
    let serialized = host.serialize_to_memory(&value, &[]).expect("serializes");
    assert_eq!(serialized.plugin, "legacy");
    assert_eq!(
        serialized.blobs,
        vec![("lines".to_owned(), b"a\nb".to_vec())]
    );
}

#[test]
fn kind_added_in_1_1_reaches_a_1_0_plugin_as_unknown_and_is_declined() {
    let (dir, _) = legacy_host();
    // Without the composite, which would take the list and send the class
    // on as a part of its own.
    let mut options = stowage::HostOptions::with_config(dir.config_path());
    options.toggles = Some("-composite".into());
    let host = stowage::Host::open(options).expect("host");
    let class = Value::ClassSource(ClassSource {
        qualname: "A".into(),
        module: None,
        source: "class A: pass".into(),
    });
    let value = Value::List(vec![Value::String("a".into()), class]);
    let Err(Error::Dispatch(DispatchError::NoSerializer { attempts, .. })) =
        host.serialize_to_memory(&value, &[])
    else {
        panic!("expected no serializer");
    };
    let answers: Vec<(String, String)> = attempts
        .iter()
        .map(|a| (a.plugin.clone(), a.answer.to_string()))
        .collect();
    assert_eq!(
        answers,
        [
            ("legacy".to_owned(), "declined".to_owned()),
            ("msgpack".to_owned(), "declined".to_owned())
        ]
    );
    assert_eq!(status_of(&host, "legacy").dispatch_errors, 0);
}

#[test]
fn capability_added_in_1_1_falls_back_to_generic_rendering() {
    let (_dir, host) = legacy_host();
    let meta = ArtifactMeta {
        obj_type: "list".into(),
        encoding: "legacy-lines".into(),
        encoding_version: 1,
        info: vec![],
        blobs: vec![("lines".into(), 3)],
    };
    let blobs = vec![("lines".to_owned(), Buffer::from_vec(b"a\nb".to_vec()))];
    let described = host
        .describe(&meta, &stowage::WrittenBy::new("legacy", "1.0.0"), &blobs)
        .expect("describes");
    assert_eq!(
        described.output,
        "list (legacy-lines v1)\n  blob lines: 3 bytes"
    );
    let loaded = host
        .deserialize(&meta, &stowage::WrittenBy::new("legacy", "1.0.0"), &blobs)
        .expect("loads");
    assert_eq!(
        loaded.output,
        Value::List(vec![Value::String("a".into()), Value::String("b".into())])
    );
}
