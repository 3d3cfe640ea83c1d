//! Composite artifacts (SPEC §15) through the real host and the real
//! plugins: a checkpoint of tensors, a table and a class in one record
//! (format version 2) with each leaf in its own format, the grouping rule,
//! verified and mapped loads (tensor leaves point into the blob files),
//! and every failure with its exact message: a leaf nothing takes, a
//! panicking leaf plugin, a part whose plugin is disabled at load, the
//! depth limit and the blob limit.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use stowage::{ArrowTable, Buffer, ClassSource, Host, HostOptions, Tensor, TensorMap, Value};
use stowage_tests::{file_mappings, StowageCmd, TestDir};

/// A store with the three real plugins installed.
pub(crate) fn plugins_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("stowage-tensor", "stowage_tensor");
    dir.install("stowage-arrow", "stowage_arrow");
    dir.install("stowage-class-source", "stowage_class_source");
    dir
}

pub(crate) fn tensor(fill: u8, len: usize) -> Value {
    Value::Tensor(Tensor {
        dtype: "U8".into(),
        shape: vec![len as u64],
        data: Buffer::from_vec(vec![fill; len]),
    })
}

pub(crate) fn table() -> Value {
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3]));
    let scores: ArrayRef = Arc::new(Float64Array::from(vec![0.5, 0.25, 0.125]));
    let batch = RecordBatch::try_from_iter([("id", ids), ("score", scores)]).expect("record batch");
    let exported = stowage_arrow::export_batch(&batch).expect("export");
    Value::Arrow(ArrowTable::new(vec![exported]))
}

pub(crate) fn class() -> Value {
    Value::ClassSource(ClassSource {
        qualname: "Net".into(),
        module: Some("model".into()),
        source: "class Net:\n    layers = 2\n".into(),
    })
}

/// `value` with each Arrow table replaced by its record batches' content
/// (ArrowTable compares by identity), so loaded values compare by content.
pub(crate) fn comparable(value: &Value) -> Value {
    match value {
        Value::Arrow(table) => Value::List(
            table
                .export()
                .into_iter()
                .map(|b| {
                    let batch = stowage_arrow::import_batch(b).expect("import");
                    Value::String(format!("{batch:?}"))
                })
                .collect(),
        ),
        Value::List(items) => Value::List(items.iter().map(comparable).collect()),
        Value::Map(entries) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), comparable(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    )
}

/// The checkpoint: a map of arrays, an optimizer with plain data
/// and a list of arrays, a step, an Arrow table and a class.
pub(crate) fn checkpoint() -> Value {
    map(vec![
        (
            "weights",
            map(vec![("w1", tensor(1, 300_000)), ("w2", tensor(2, 8))]),
        ),
        (
            "optimizer",
            map(vec![
                ("lr", Value::Float(1e-3)),
                ("state", Value::List(vec![tensor(3, 16), tensor(4, 16)])),
            ]),
        ),
        ("step", Value::Int(1200)),
        (
            "eval",
            map(vec![
                ("table", table()),
                ("note", Value::String("ok".into())),
            ]),
        ),
        ("model", class()),
    ])
}

fn parts_of(record: &stowage::Record) -> Vec<(String, String, String, String)> {
    record
        .meta
        .parts
        .iter()
        .map(|p| {
            (
                p.path.clone(),
                p.kind.clone(),
                p.serializer.clone(),
                p.encoding.clone(),
            )
        })
        .collect()
}

fn owned(parts: &[(&str, &str, &str, &str)]) -> Vec<(String, String, String, String)> {
    parts
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

#[test]
fn a_checkpoint_is_one_record_with_each_leaf_in_its_own_format() {
    let dir = plugins_dir("composite-checkpoint");
    let host = dir.host();
    let value = checkpoint();
    let saved = host.save("ckpt", &value, &[]).expect("save");
    let record = &saved.record;
    assert_eq!(record.format_version, 2);
    assert_eq!(
        (
            record.meta.encoding.as_str(),
            record.meta.serializer.as_str(),
            record.meta.obj_type.as_str()
        ),
        ("stowage-composite", "composite", "map")
    );
    assert_eq!(
        parts_of(record),
        owned(&[
            ("weights", "tensor_map", "tensor", "safetensors"),
            ("optimizer/state/0", "tensor", "tensor", "safetensors"),
            ("optimizer/state/1", "tensor", "tensor", "safetensors"),
            ("eval/table", "arrow", "arrow", "arrow-ipc-file"),
            (
                "model",
                "class_source",
                "class-source",
                "python-class-source"
            ),
        ])
    );
    let blob_names: Vec<&str> = record.blobs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        blob_names,
        [
            "p0.data",
            "p1.data",
            "p2.data",
            "p3.data",
            "p4.source",
            "skeleton"
        ]
    );
    assert_eq!(
        record.meta.parts[0].blobs,
        [("data".to_owned(), "p0.data".to_owned())]
    );
    // One record, read back the same by a fresh host (from the index log).
    let again = Host::open(HostOptions::with_config(dir.config_path())).expect("host");
    let loaded = again.load("ckpt").expect("load");
    assert_eq!(loaded.record, *record);
    assert_eq!(comparable(&loaded.value), comparable(&value));
    let mapped = host.load_mapped("ckpt").expect("mapped").value;
    assert_eq!(comparable(&mapped), comparable(&value));
}

/// The file mapped at `ptr`, if any.
fn file_mapped_at(ptr: *const u8) -> Option<PathBuf> {
    file_mappings()
        .into_iter()
        .find(|(range, _)| range.contains(&(ptr as usize)))
        .map(|(_, path)| path)
}

#[test]
fn a_mapped_load_maps_every_tensor_part() {
    let dir = plugins_dir("composite-zero-copy");
    let host = dir.host();
    let big = |fill| tensor(fill, 4 << 20);
    let value = map(vec![
        ("weights", map(vec![("a", big(1)), ("b", big(2))])),
        ("frames", Value::List(vec![big(3), Value::Null, big(4)])),
        ("step", Value::Int(7)),
    ]);
    host.save("m", &value, &[]).expect("save");
    let loaded = host.load_mapped("m").expect("load_mapped");
    assert_eq!(loaded.value, value);
    let store = fs::canonicalize(dir.root.join("store")).expect("store dir");
    let Value::Map(top) = &loaded.value else {
        panic!("not a map")
    };
    let mut tensors = Vec::new();
    for (_, v) in top {
        match v {
            Value::Map(entries) => tensors.extend(entries.iter().map(|(_, t)| t)),
            Value::List(items) => tensors.extend(items.iter()),
            _ => {}
        }
    }
    let tensors: Vec<&Tensor> = tensors
        .into_iter()
        .filter_map(|v| match v {
            Value::Tensor(t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(tensors.len(), 4);
    for t in tensors {
        let path = file_mapped_at(t.data.as_ptr()).expect("tensor data lies in a mapping");
        assert!(
            path.starts_with(&store),
            "tensor points into {}, not a blob under {}",
            path.display(),
            store.display()
        );
    }
}

#[test]
fn a_map_of_tensors_stores_as_a_tensor_map_at_the_top_and_as_one_part_inside() {
    let dir = plugins_dir("composite-grouping");
    let host = dir.host();
    let weights = map(vec![("b", tensor(1, 4)), ("a", tensor(2, 4))]);
    let top = host.save("top", &weights, &[]).expect("save top");
    assert_eq!(
        (
            top.record.format_version,
            top.record.meta.obj_type.as_str(),
            top.record.meta.serializer.as_str()
        ),
        (1, "tensor_map", "tensor")
    );
    let Value::TensorMap(TensorMap { tensors, .. }) = host.load("top").expect("load").value else {
        panic!("a top-level map of tensors loads as a tensor_map")
    };
    assert_eq!(tensors.len(), 2);
    // Inside a composite the same map is one part, rebuilt as a map in its
    // own key order.
    let nested = map(vec![("weights", weights.clone()), ("step", Value::Int(1))]);
    let saved = host.save("nested", &nested, &[]).expect("save nested");
    assert_eq!(
        parts_of(&saved.record),
        owned(&[("weights", "tensor_map", "tensor", "safetensors")])
    );
    assert_eq!(host.load("nested").expect("load").value, nested);
    // A tuple-like list of tensors: each its own part, back as a list.
    let frames = Value::List(vec![tensor(5, 2), tensor(6, 2)]);
    let saved = host.save("frames", &frames, &[]).expect("save frames");
    assert_eq!(
        parts_of(&saved.record),
        owned(&[
            ("0", "tensor", "tensor", "safetensors"),
            ("1", "tensor", "tensor", "safetensors"),
        ])
    );
    assert_eq!(host.load("frames").expect("load").value, frames);
}

#[test]
fn identical_leaves_share_their_blob_by_digest() {
    let dir = plugins_dir("composite-dedup");
    let host = dir.host();
    let value = Value::List(vec![tensor(9, 100_000), tensor(9, 100_000)]);
    let saved = host.save("twins", &value, &[]).expect("save");
    let digests: Vec<&str> = saved.record.blobs[..2]
        .iter()
        .map(|b| b.digest.as_str())
        .collect();
    assert_eq!(digests[0], digests[1]);
    assert_eq!(host.load("twins").expect("load").value, value);
}

#[test]
fn a_leaf_nothing_takes_fails_the_save_naming_its_path() {
    let dir = TestDir::new("composite-no-serializer");
    dir.install("stowage-tensor", "stowage_tensor");
    let host = dir.host();
    let value = map(vec![
        ("weights", Value::List(vec![tensor(1, 4)])),
        ("eval", map(vec![("table", table())])),
    ]);
    let error = host.save("ckpt", &value, &[]).expect_err("no arrow plugin");
    assert_eq!(
        error.to_string(),
        "cannot store ckpt: eval/table: no serializer accepted the arrow value; no active candidate"
    );
    let store = host.store().expect("store");
    assert_eq!(
        store.get("ckpt").expect_err("no record").to_string(),
        "no artifact named ckpt"
    );
}

#[test]
fn a_panicking_leaf_plugin_is_skipped_for_the_next_candidate_of_that_leaf() {
    let dir = TestDir::new("composite-panicky-leaf");
    dir.install("stowage-tensor", "stowage_tensor");
    dir.install("fixture-panicky", "stowage_panicky");
    let host = dir.host();
    let value = Value::List(vec![
        Value::Tensor(Tensor {
            dtype: "U8".into(),
            shape: vec![15],
            data: Buffer::from_vec(b"panic:serialize".to_vec()),
        }),
        Value::String("plain".into()),
    ]);
    let saved = host.save("frames", &value, &[]).expect("save");
    assert_eq!(
        parts_of(&saved.record),
        owned(&[("0", "tensor", "tensor", "safetensors")])
    );
    let skipped: Vec<(&str, &str)> = saved
        .skipped
        .iter()
        .map(|s| (s.plugin.as_str(), s.message.as_str()))
        .collect();
    assert_eq!(
        skipped,
        [(
            "panicky",
            "dispatch: serialize: panic: panicked in serialize: fixture panic in serialize at \
             tests/fixtures/common/src/lib.rs:54"
        )]
    );
    assert_eq!(host.load("frames").expect("load").value, value);
}

#[test]
fn a_part_whose_plugin_is_disabled_names_the_part_it_blocks() {
    let dir = plugins_dir("composite-missing-plugin");
    dir.host().save("ckpt", &checkpoint(), &[]).expect("save");
    let mut options = HostOptions::with_config(dir.config_path());
    options.toggles = Some("-arrow".into());
    let host = Host::open(options).expect("host");
    assert_eq!(
        host.load("ckpt").expect_err("arrow disabled").to_string(),
        "cannot load ckpt: eval/table: no deserializer for encoding arrow-ipc-file; written by \
         arrow 0.1.0 — is it installed and enabled?"
    );
    // Every blob, the blocked part's included, still reads raw.
    let (record, blobs) = host
        .load_raw("ckpt", stowage::Verify::Hash)
        .expect("raw blobs");
    assert_eq!(blobs.len(), record.blobs.len());
    StowageCmd::new(&dir, &["get", "ckpt", "--raw", "-o", "raw"])
        .env("STOWAGE_PLUGINS", "-arrow")
        .ok();
    assert!(dir.root.join("raw/p3.data").is_file());
}

#[test]
fn the_composite_is_a_serializer_toggled_like_any_other() {
    let dir = plugins_dir("composite-disabled");
    dir.host().save("ckpt", &checkpoint(), &[]).expect("save");
    let mut options = HostOptions::with_config(dir.config_path());
    options.toggles = Some("-composite".into());
    let host = Host::open(options).expect("host");
    assert_eq!(
        host.save("again", &checkpoint(), &[])
            .expect_err("composite disabled")
            .to_string(),
        "cannot store again: no serializer accepted the map value; tried: msgpack (declined)"
    );
    assert_eq!(
        host.load("ckpt")
            .expect_err("composite disabled")
            .to_string(),
        "cannot load ckpt: no deserializer for encoding stowage-composite; written by \
         composite 0.1.0 — is it installed and enabled?"
    );
}

#[test]
fn nesting_beyond_the_fallback_limit_is_refused() {
    let dir = plugins_dir("composite-depth");
    let host = dir.host();
    let mut value = Value::List(vec![tensor(1, 1)]);
    for _ in 0..300 {
        value = Value::List(vec![value]);
    }
    assert_eq!(
        host.save("deep", &value, &[])
            .expect_err("too deep")
            .to_string(),
        "cannot store deep: the value nests deeper than 256 levels"
    );
    let mut ok = Value::List(vec![tensor(1, 1)]);
    for _ in 0..250 {
        ok = Value::List(vec![ok]);
    }
    host.save("ok", &ok, &[]).expect("within the limit");
    assert_eq!(host.load("ok").expect("load").value, ok);
}

#[test]
fn the_blob_limit_counts_every_parts_blobs_and_the_skeleton() {
    let dir = plugins_dir("composite-blob-limit");
    let host = dir.host();
    // 4,095 one-blob parts + the skeleton = 4,096 blobs: the limit.
    let at_limit = Value::List((0..4095).map(|i| tensor((i % 256) as u8, 1)).collect());
    let saved = host.save("at", &at_limit, &[]).expect("at the limit");
    assert_eq!(
        saved.record.blobs.len(),
        stowage::artifact::MAX_BLOBS_PER_ARTIFACT
    );
    let over = Value::List((0..4096).map(|i| tensor((i % 256) as u8, 1)).collect());
    assert_eq!(
        host.save("over", &over, &[]).expect_err("over").to_string(),
        "cannot store over: more than 4096 blobs in one artifact, counting every part's"
    );
    assert_eq!(host.load("at").expect("load").value, at_limit);
}
