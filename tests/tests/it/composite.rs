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
use stowage_tests::{file_mappings, run_python, StowageCmd, TestDir};

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

/// The issue's checkpoint: a map of arrays, an optimizer with plain data
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

#[test]
fn inspect_and_show_list_every_part_and_a_blocked_part_is_named() {
    let dir = plugins_dir("composite-inspect");
    let saved = dir.host().save("ckpt", &checkpoint(), &[]).expect("save");
    let record = &saved.record;
    let mut expected = format!(
        "name:        ckpt\n\
         type:        map\n\
         encoding:    stowage-composite v1\n\
         written by:  composite 0.1.0\n\
         created:     {}\n\
         record:      format v2\n\
         info:        parts = 5\n\
         info:        source = api\n\
         part:        weights = tensor_map, safetensors v1 by tensor 0.1.0 (p0.data)\n\
         part:        optimizer/state/0 = tensor, safetensors v1 by tensor 0.1.0 (p1.data)\n\
         part:        optimizer/state/1 = tensor, safetensors v1 by tensor 0.1.0 (p2.data)\n\
         part:        eval/table = arrow, arrow-ipc-file v1 by arrow 0.1.0 (p3.data)\n\
         part:        model = class_source, python-class-source v1 by class-source 0.1.0 \
         (p4.source)\n",
        record.created
    );
    for blob in &record.blobs {
        expected.push_str(&format!(
            "blob:        {} {} bytes blake3:{} ({})\n",
            blob.name, blob.size, blob.digest, blob.storage
        ));
    }
    assert_eq!(StowageCmd::new(&dir, &["inspect", "ckpt"]).ok(), expected);

    let json: serde_json::Value =
        serde_json::from_str(&StowageCmd::new(&dir, &["inspect", "ckpt", "--json"]).ok())
            .expect("json");
    assert_eq!(json["format_version"], 2);
    assert_eq!(
        json["parts"][3],
        serde_json::json!({
            "path": "eval/table", "kind": "arrow", "obj_type": "arrow",
            "encoding": "arrow-ipc-file", "encoding_version": 1,
            "written_by": {"serializer": "arrow", "version": "0.1.0"},
            "serializer_info": json["parts"][3]["serializer_info"].clone(),
            "blobs": [{"name": "data", "blob": "p3.data"}]
        })
    );
    assert_eq!(json["parts"].as_array().map(Vec::len), Some(5));

    let tensors = "  weights: tensor_map (safetensors v1): 2 tensors, 300008 bytes of data\n      \
         w1: U8 [300000], 300000 bytes\n      \
         w2: U8 [8], 8 bytes = [2, 2, 2, 2, 2, 2, 2, 2]\n  \
         optimizer/state/0: tensor (safetensors v1): 1 tensor, 16 bytes of data\n      \
         tensor: U8 [16], 16 bytes\n  \
         optimizer/state/1: tensor (safetensors v1): 1 tensor, 16 bytes of data\n      \
         tensor: U8 [16], 16 bytes\n";
    let rest = "  model: python class Net in module model: 2 lines, 26 bytes\n      \
         class Net:\n\
         skeleton: {\"weights\":{\"$part\":\"weights\"},\"optimizer\":{\"lr\":0.001,\"state\":\
         [{\"$part\":\"optimizer/state/0\"},{\"$part\":\"optimizer/state/1\"}]},\"step\":1200,\
         \"eval\":{\"table\":{\"$part\":\"eval/table\"},\"note\":\"ok\"},\"model\":{\"$part\":\
         \"model\"}}\n";
    assert_eq!(
        StowageCmd::new(&dir, &["show", "ckpt"]).ok(),
        format!(
            "map (stowage-composite v1), 5 parts:\n{tensors}  \
             eval/table: arrow table: 3 rows, 2 columns, 1 batches, compression none\n    \
             schema:\n      id: Int64 not null\n      score: Float64 not null\n    \
             first rows:\n      1 | 0.5\n      2 | 0.25\n      3 | 0.125\n{rest}"
        )
    );
    // With arrow disabled, show names the part it blocks and shows the rest.
    assert_eq!(
        StowageCmd::new(&dir, &["show", "ckpt"])
            .env("STOWAGE_PLUGINS", "-arrow")
            .ok(),
        format!(
            "map (stowage-composite v1), 5 parts:\n{tensors}  \
             eval/table: cannot describe: no deserializer for encoding arrow-ipc-file; written \
             by arrow 0.1.0 — is it installed and enabled?\n{rest}"
        )
    );
    // And get fails naming it.
    StowageCmd::new(&dir, &["get", "ckpt", "-o", "out"])
        .env("STOWAGE_PLUGINS", "-arrow")
        .fails(
            1,
            "error: cannot load ckpt: eval/table: no deserializer for encoding arrow-ipc-file; \
             written by arrow 0.1.0 — is it installed and enabled?",
        );
}

/// Reads a composite's directory export with json, safetensors and pyarrow
/// alone and prints what it found, one line per leaf.
const PY_READ_DIR: &str = r#"
import json, os, sys
import numpy as np
from safetensors.numpy import load_file
import pyarrow as pa
d = sys.argv[1]
def load(node, path):
    if isinstance(node, dict) and "$part" in node:
        f = os.path.join(d, node["$file"])
        if f.endswith(".safetensors"):
            tensors = load_file(f)
            if "$keys" in node:
                for k in node["$keys"]:
                    print(f"{path}/{k}: {tensors[k].dtype} {tensors[k].tolist()[:3]}")
            else:
                print(f"{path}: {tensors['tensor'].dtype} {tensors['tensor'].tolist()[:3]}")
        elif f.endswith(".arrow"):
            t = pa.ipc.open_file(f).read_all()
            print(f"{path}: {t.column_names} {t.num_rows} rows {t.column('score').to_pylist()}")
        elif f.endswith(".py"):
            print(f"{path}: {open(f).read().splitlines()[0]}")
    elif isinstance(node, dict):
        for k, v in node.items():
            load(v, f"{path}/{k[1:] if k.startswith('$$') else k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            load(v, f"{path}/{i}")
    else:
        print(f"{path}: {node!r}")
load(json.load(open(os.path.join(d, "skeleton.json"))), "")
"#;

#[test]
fn get_writes_a_directory_python_reads_alone_and_put_reads_it_back() {
    let dir = plugins_dir("composite-dir");
    let host = dir.host();
    let value = checkpoint();
    host.save("ckpt", &value, &[]).expect("save");
    StowageCmd::new(&dir, &["get", "ckpt"]).fails(
        1,
        "error: ckpt is a composite of several files; give -o DIR to write them",
    );
    assert_eq!(
        StowageCmd::new(&dir, &["get", "ckpt", "-o", "out"]).ok(),
        format!("wrote 5 parts of ckpt and skeleton.json to out\n")
    );
    let out = dir.root.join("out");
    let mut files: Vec<String> = fs::read_dir(&out)
        .expect("out")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "eval.table.arrow",
            "model.py",
            "optimizer.state.0.safetensors",
            "optimizer.state.1.safetensors",
            "skeleton.json",
            "weights.safetensors"
        ]
    );
    let skeleton: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("skeleton.json")).expect("read")).expect("json");
    assert_eq!(
        skeleton,
        serde_json::json!({
            "weights": {"$part": "weights", "$file": "weights.safetensors",
                        "$kind": "tensor_map", "$keys": ["w1", "w2"]},
            "optimizer": {"lr": 0.001, "state": [
                {"$part": "optimizer/state/0", "$file": "optimizer.state.0.safetensors", "$kind": "tensor"},
                {"$part": "optimizer/state/1", "$file": "optimizer.state.1.safetensors", "$kind": "tensor"}
            ]},
            "step": 1200,
            "eval": {"table": {"$part": "eval/table", "$file": "eval.table.arrow", "$kind": "arrow"},
                     "note": "ok"},
            "model": {"$part": "model", "$file": "model.py", "$kind": "class_source"}
        })
    );
    assert_eq!(
        run_python(PY_READ_DIR, &[&out]),
        "/weights/w1: uint8 [1, 1, 1]\n\
         /weights/w2: uint8 [2, 2, 2]\n\
         /optimizer/lr: 0.001\n\
         /optimizer/state/0: uint8 [3, 3, 3]\n\
         /optimizer/state/1: uint8 [4, 4, 4]\n\
         /step: 1200\n\
         /eval/table: ['id', 'score'] 3 rows [0.5, 0.25, 0.125]\n\
         /eval/note: 'ok'\n\
         /model: class Net:\n"
    );
    let stored = StowageCmd::new(&dir, &["put", "back", "out"]).ok();
    assert!(
        stored.starts_with("stored back (map, stowage-composite v1, "),
        "{stored}"
    );
    let back = host.load("back").expect("load back");
    // A .py file names no module: the class comes back without one.
    let Value::Map(mut expected) = value else {
        panic!("a map")
    };
    expected[4].1 = Value::ClassSource(ClassSource {
        qualname: "Net".into(),
        module: None,
        source: "class Net:\n    layers = 2\n".into(),
    });
    assert_eq!(comparable(&back.value), comparable(&Value::Map(expected)));
    let explained = StowageCmd::new(&dir, &["explain", "out"]).ok();
    assert!(
        explained.starts_with(
            "candidates for part weights (weights.safetensors):\n  1. tensor (priority 10): \
             accepted\n"
        ),
        "{explained}"
    );
}

#[test]
fn hostile_keys_never_make_a_path_outside_the_directory_and_round_trip() {
    let dir = plugins_dir("composite-hostile");
    let host = dir.host();
    let keys = [
        "../x",
        "/abs",
        "a/b",
        "",
        "ünï ✓",
        ".hidden",
        "..",
        "skeleton",
    ];
    let mut entries: Vec<(String, Value)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| ((*k).to_owned(), Value::List(vec![tensor(i as u8, 2)])))
        .collect();
    entries.push(("$part".into(), Value::String("not a reference".into())));
    entries.push(("$$x".into(), Value::Int(1)));
    entries.push((
        "nested".into(),
        Value::Map(vec![("$part".into(), Value::List(vec![tensor(9, 2)]))]),
    ));
    let value = Value::Map(entries);
    host.save("hostile", &value, &[]).expect("save");
    StowageCmd::new(&dir, &["get", "hostile", "-o", "sub/out"]).fails(
        1,
        "error: cannot write sub/out: No such file or directory (os error 2)",
    );
    fs::create_dir(dir.root.join("sub")).expect("sub");
    StowageCmd::new(&dir, &["get", "hostile", "-o", "sub/out"]).ok();
    // Only sub/out was created, and it holds plain files only.
    let mut top: Vec<String> = fs::read_dir(dir.root.join("sub"))
        .expect("sub")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["out"]);
    let mut files: Vec<String> = fs::read_dir(dir.root.join("sub/out"))
        .expect("out")
        .map(|e| {
            let e = e.expect("entry");
            assert!(e.file_type().expect("type").is_file());
            e.file_name().to_string_lossy().into_owned()
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "%.0.safetensors",
            "%.abs.0.safetensors",
            "%2E%2E.0.safetensors",
            "%2E%2E.x.0.safetensors",
            "%2Ehidden.0.safetensors",
            "a.b.0.safetensors",
            "nested.%24part.0.safetensors",
            "skeleton.0.safetensors",
            "skeleton.json",
            "%C3%BCn%C3%AF%20%E2%9C%93.0.safetensors",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let skeleton: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.root.join("sub/out/skeleton.json")).expect("read"))
            .expect("json");
    assert_eq!(skeleton["$$part"], "not a reference");
    assert_eq!(skeleton["$$$x"], 1);
    assert_eq!(
        skeleton["nested"]["$$part"][0]["$file"],
        "nested.%24part.0.safetensors"
    );
    StowageCmd::new(&dir, &["put", "back", "sub/out"]).ok();
    assert_eq!(host.load("back").expect("load").value, value);
}

#[test]
fn put_dir_refuses_references_that_leave_the_directory() {
    let dir = plugins_dir("composite-put-hostile");
    let out = dir.root.join("d");
    fs::create_dir(&out).expect("d");
    fs::write(dir.root.join("secret.safetensors"), b"x").expect("secret");
    for (file, reason) in [
        (
            "../secret.safetensors",
            "the reference at a names ../secret.safetensors, which is not a part file name",
        ),
        (
            "/etc/passwd",
            "the reference at a names /etc/passwd, which is not a part file name",
        ),
        (
            "skeleton.json",
            "the reference at a names skeleton.json, which is not a part file name",
        ),
    ] {
        let doc = serde_json::json!({"a": {"$part": "a", "$file": file, "$kind": "tensor"}});
        fs::write(out.join("skeleton.json"), doc.to_string()).expect("write");
        StowageCmd::new(&dir, &["put", "x", "d"]).fails(
            1,
            &format!("error: cannot store x: {}: {reason}", "d/skeleton.json"),
        );
    }
    std::os::unix::fs::symlink(
        dir.root.join("secret.safetensors"),
        out.join("link.safetensors"),
    )
    .expect("symlink");
    let doc =
        serde_json::json!({"a": {"$part": "a", "$file": "link.safetensors", "$kind": "tensor"}});
    fs::write(out.join("skeleton.json"), doc.to_string()).expect("write");
    StowageCmd::new(&dir, &["put", "x", "d"]).fails(
        1,
        &format!(
            "error: cannot store x: {} is not a regular file",
            "d/link.safetensors"
        ),
    );
    let doc = serde_json::json!({"$oops": 1, "a": {"$part": "a", "$file": "a.safetensors", "$kind": "tensor"}});
    fs::write(out.join("skeleton.json"), doc.to_string()).expect("write");
    StowageCmd::new(&dir, &["put", "x", "d"]).fails(
        1,
        &format!(
            "error: cannot store x: {}: key $oops at / is reserved (a user key starting with $ is written $$)",
            "d/skeleton.json"
        ),
    );
    assert_eq!(
        dir.host()
            .store()
            .expect("store")
            .get("x")
            .expect_err("nothing stored")
            .to_string(),
        "no artifact named x"
    );
}
