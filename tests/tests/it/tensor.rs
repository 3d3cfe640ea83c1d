//! The tensor plugin through the real host and the `stowage` binary:
//! Python interop both ways (every numpy dtype compared as arrays; bf16, f8
//! and f4 byte for byte), zero-copy mapped loads (the data pointer lies in
//! the blob's file mapping; a 1 GiB load barely moves resident memory),
//! malformed files refused with one line, and `show`.
//!
//! Interop tests need the harness venv (numpy, safetensors); without it they
//! fail, never skip.

use std::fs;
use std::path::PathBuf;

use stowage::{Buffer, Tensor, TensorMap, Value};
use stowage_tests::{file_mappings, proc_status_bytes, run_python, StowageCmd, TestDir};

fn tensor_dir(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.install("stowage-tensor", "stowage_tensor");
    dir
}

fn tensor(dtype: &str, shape: &[u64], data: Vec<u8>) -> Tensor {
    Tensor {
        dtype: dtype.to_owned(),
        shape: shape.to_vec(),
        data: Buffer::from_vec(data),
    }
}

fn le<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// Python writes one numpy-dtype file with `save_file` (2×3 arrays holding
/// extremes, NaN and -0.0, a 0-d scalar, a zero-size array, metadata) and one
/// file of the dtypes numpy lacks with the low-level `serialize_file`.
const PY_WRITE: &str = r#"
import sys, numpy as np
from safetensors.numpy import save_file
from safetensors import serialize_file, TensorSpec
numpy_path, exotic_path = sys.argv[1], sys.argv[2]
t = {}
for name in ["bool", "uint8", "int8", "uint16", "int16", "uint32", "int32",
             "uint64", "int64", "float16", "float32", "float64", "complex64"]:
    dt = np.dtype(name)
    if dt.kind == "b":
        a = np.array([True, False, True, False, False, True])
    elif dt.kind in "iu":
        info = np.iinfo(dt)
        a = np.array([info.min, 0, 1, info.max // 3, info.max, 7], dtype=dt)
    elif dt.kind == "f":
        a = np.array([-0.0, 1.5, np.inf, -np.inf, np.finfo(dt).max, np.nan], dtype=dt)
    else:
        a = np.array([1 + 2j, -0.5j, 3, np.inf, 0, -1], dtype=dt)
    t[name] = a.reshape(2, 3)
t["scalar"] = np.array(3.25)
t["empty"] = np.zeros((0, 3), dtype=np.int32)
save_file(t, numpy_path, metadata={"format": "np", "note": "é ✓ \"quoted\""})

keep = {}
def spec(dtype, shape, data):
    buf = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    keep[dtype] = buf
    return TensorSpec(dtype=dtype, shape=shape, data_ptr=buf.ctypes.data, data_len=len(buf))
specs = {
    "bf16": spec("bfloat16", [2, 2], [0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f, 0xc1, 0xff]),
    "f8_e4m3": spec("float8_e4m3fn", [3], [0x38, 0x7e, 0x80]),
    "f8_e5m2": spec("float8_e5m2", [3], [0x3c, 0x7b, 0xfc]),
    "f8_e8m0": spec("float8_e8m0fnu", [2], [0x7f, 0xff]),
    "f8_e4m3fnuz": spec("float8_e4m3fnuz", [2], [0x40, 0x80]),
    "f8_e5m2fnuz": spec("float8_e5m2fnuz", [2], [0x44, 0x80]),
    "f4": spec("float4_e2m1fn_x2", [2], [0x21, 0xf7]),
}
serialize_file(specs, exotic_path, metadata={"kind": "exotic"})
"#;

/// Both files, as Python reads them, equal their round-tripped copies.
const PY_COMPARE: &str = r#"
import sys, numpy as np
from safetensors import deserialize, safe_open
from safetensors.numpy import load_file
numpy_a, numpy_b, exotic_a, exotic_b = sys.argv[1:5]
a, b = load_file(numpy_a), load_file(numpy_b)
assert list(a) == list(b) and len(a) == 15, (list(a), list(b))
for name in a:
    x, y = a[name], b[name]
    assert x.dtype == y.dtype and x.shape == y.shape, name
    assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), name
    assert x.tobytes() == y.tobytes(), name
assert b["scalar"].shape == () and b["scalar"].item() == 3.25
assert b["empty"].shape == (0, 3) and b["empty"].dtype == np.int32
for path in (numpy_a, numpy_b):
    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"format": "np", "note": "é ✓ \"quoted\""}, f.metadata()
ea = deserialize(open(exotic_a, "rb").read())
eb = deserialize(open(exotic_b, "rb").read())
norm = lambda items: sorted((n, v["dtype"], list(v["shape"]), bytes(v["data"])) for n, v in items)
assert norm(ea) == norm(eb) and len(ea) == 7
print(",".join(sorted(v["dtype"] for _, v in eb)))
"#;

#[test]
fn python_written_files_round_trip_through_put_and_get() {
    let dir = tensor_dir("tensor-py-put-get");
    let numpy = dir.root.join("numpy.safetensors");
    let exotic = dir.root.join("exotic.safetensors");
    run_python(PY_WRITE, &[&numpy, &exotic]);

    StowageCmd::new(&dir, &["put", "np", "numpy.safetensors"]).ok();
    StowageCmd::new(&dir, &["put", "ex", "exotic.safetensors"]).ok();
    StowageCmd::new(&dir, &["get", "np", "-o", "numpy-back.safetensors"]).ok();
    StowageCmd::new(&dir, &["get", "ex", "-o", "exotic-back.safetensors"]).ok();
    let numpy_back = dir.root.join("numpy-back.safetensors");
    let exotic_back = dir.root.join("exotic-back.safetensors");
    assert_eq!(fs::read(&numpy_back).ok(), fs::read(&numpy).ok());
    assert_eq!(fs::read(&exotic_back).ok(), fs::read(&exotic).ok());

    let dtypes = run_python(PY_COMPARE, &[&numpy, &numpy_back, &exotic, &exotic_back]);
    assert_eq!(
        dtypes.trim(),
        "BF16,F4,F8_E4M3,F8_E4M3FNUZ,F8_E5M2,F8_E5M2FNUZ,F8_E8M0"
    );

    // The host reads Python's bf16 and f8 bytes unchanged.
    let host = dir.host();
    let loaded = host.load("ex").expect("load");
    let Value::TensorMap(map) = loaded.value else {
        panic!("not a tensor map: {:?}", loaded.value)
    };
    let find = |name: &str| match map.tensors.iter().find(|(n, _)| n == name) {
        Some((_, t)) => t,
        None => panic!("no tensor {name}"),
    };
    let bf16 = find("bf16");
    assert_eq!(
        (bf16.dtype.as_str(), bf16.shape.as_slice()),
        ("BF16", &[2, 2][..])
    );
    assert_eq!(
        &bf16.data[..],
        [0x80, 0x3f, 0x00, 0xc0, 0x80, 0x7f, 0xc1, 0xff]
    );
    let f8 = find("f8_e4m3");
    assert_eq!(
        (f8.dtype.as_str(), &f8.data[..]),
        ("F8_E4M3", &[0x38, 0x7e, 0x80][..])
    );
    assert_eq!(map.metadata, vec![("kind".to_owned(), "exotic".to_owned())]);
}

/// Reads what stowage wrote: the numpy file as arrays, the other one raw.
const PY_READ: &str = r#"
import sys, json, numpy as np
from safetensors import deserialize, safe_open
from safetensors.numpy import load_file
numpy_path, raw_path, manifest_path = sys.argv[1:4]
manifest = json.load(open(manifest_path))
NP = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
      "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
      "F16": "float16", "F32": "float32", "F64": "float64", "C64": "complex64"}
arrays = load_file(numpy_path)
assert set(arrays) == set(manifest["numpy"]), (sorted(arrays), sorted(manifest["numpy"]))
for name, (dtype, shape, data) in manifest["numpy"].items():
    a = arrays[name]
    assert a.dtype == np.dtype(NP[dtype]), (name, a.dtype)
    assert a.shape == tuple(shape), (name, a.shape)
    assert a.tobytes() == bytes.fromhex(data), name
assert arrays["f32"].tolist() == [[1.5, -2.0], [0.25, 1024.0]]
assert arrays["i64"].tolist() == [-(1 << 62), 5, 0]
assert arrays["bool"].tolist() == [True, False, True]
assert arrays["scalar"].shape == () and arrays["scalar"].item() == 3.25
assert arrays["empty"].shape == (0, 4)
with safe_open(numpy_path, framework="numpy") as f:
    assert f.metadata() == {"format": "np", "written by": "stowage ✓"}, f.metadata()
    assert sorted(f.keys()) == sorted(manifest["numpy"])
raw = {n: v for n, v in deserialize(open(raw_path, "rb").read())}
assert set(raw) == set(manifest["raw"]), (sorted(raw), sorted(manifest["raw"]))
for name, (dtype, shape, data) in manifest["raw"].items():
    got = raw[name]
    assert (got["dtype"], list(got["shape"]), bytes(got["data"]).hex()) == (dtype, shape, data), (name, got)
print("ok")
"#;

fn manifest_entry(map: &TensorMap) -> serde_json::Value {
    let mut entries = serde_json::Map::new();
    for (name, t) in &map.tensors {
        let hex: String = t.data.iter().map(|b| format!("{b:02x}")).collect();
        entries.insert(name.clone(), serde_json::json!([t.dtype, t.shape, hex]));
    }
    serde_json::Value::Object(entries)
}

#[test]
fn files_stowage_writes_load_in_python() {
    let dir = tensor_dir("tensor-stowage-to-py");
    let numpy = TensorMap {
        tensors: vec![
            (
                "f32".into(),
                tensor(
                    "F32",
                    &[2, 2],
                    le(&[1.5f32, -2.0, 0.25, 1024.0], f32::to_le_bytes),
                ),
            ),
            (
                "i64".into(),
                tensor("I64", &[3], le(&[-(1i64 << 62), 5, 0], i64::to_le_bytes)),
            ),
            ("bool".into(), tensor("BOOL", &[3], vec![1, 0, 1])),
            ("u8".into(), tensor("U8", &[2, 1], vec![0, 255])),
            ("i8".into(), tensor("I8", &[2], vec![0x80, 0x7f])),
            (
                "u16".into(),
                tensor("U16", &[1], le(&[65535u16], u16::to_le_bytes)),
            ),
            (
                "i16".into(),
                tensor("I16", &[2], le(&[-3i16, 300], i16::to_le_bytes)),
            ),
            (
                "u32".into(),
                tensor("U32", &[1], le(&[u32::MAX], u32::to_le_bytes)),
            ),
            (
                "i32".into(),
                tensor("I32", &[2], le(&[i32::MIN, 9], i32::to_le_bytes)),
            ),
            (
                "u64".into(),
                tensor("U64", &[1], le(&[u64::MAX], u64::to_le_bytes)),
            ),
            (
                "f16".into(),
                tensor("F16", &[3], vec![0x00, 0x3c, 0x00, 0x80, 0x00, 0x7e]),
            ),
            (
                "f64".into(),
                tensor(
                    "F64",
                    &[2],
                    le(&[f64::MIN_POSITIVE, -0.0], f64::to_le_bytes),
                ),
            ),
            (
                "c64".into(),
                tensor("C64", &[1], le(&[1.0f32, -2.0], f32::to_le_bytes)),
            ),
            (
                "scalar".into(),
                tensor("F64", &[], 3.25f64.to_le_bytes().to_vec()),
            ),
            ("empty".into(), tensor("I32", &[0, 4], vec![])),
        ],
        metadata: vec![
            ("format".into(), "np".into()),
            ("written by".into(), "stowage ✓".into()),
        ],
    };
    let raw = TensorMap {
        tensors: vec![
            (
                "bf16".into(),
                tensor("BF16", &[2], vec![0x80, 0x3f, 0xc1, 0xff]),
            ),
            ("e4m3".into(), tensor("F8_E4M3", &[2], vec![0x38, 0x80])),
            ("e5m2".into(), tensor("F8_E5M2", &[2], vec![0x3c, 0xfc])),
            ("e8m0".into(), tensor("F8_E8M0", &[1], vec![0x7f])),
            ("e4m3fnuz".into(), tensor("F8_E4M3FNUZ", &[1], vec![0x40])),
            ("e5m2fnuz".into(), tensor("F8_E5M2FNUZ", &[1], vec![0x44])),
            ("f4".into(), tensor("F4", &[4], vec![0x21, 0xf7])),
            (
                "f32".into(),
                tensor("F32", &[1], le(&[7.0f32], f32::to_le_bytes)),
            ),
        ],
        metadata: vec![],
    };
    let host = dir.host();
    host.save("np", &Value::TensorMap(numpy.clone()), &[])
        .expect("save numpy map");
    host.save("raw", &Value::TensorMap(raw.clone()), &[])
        .expect("save raw map");
    StowageCmd::new(&dir, &["get", "np", "-o", "np.safetensors"]).ok();
    StowageCmd::new(&dir, &["get", "raw", "-o", "raw.safetensors"]).ok();
    let manifest = dir.root.join("manifest.json");
    let json = serde_json::json!({"numpy": manifest_entry(&numpy), "raw": manifest_entry(&raw)});
    fs::write(&manifest, json.to_string()).expect("write manifest");
    let out = run_python(
        PY_READ,
        &[
            &dir.root.join("np.safetensors"),
            &dir.root.join("raw.safetensors"),
            &manifest,
        ],
    );
    assert_eq!(out.trim(), "ok");
}

#[test]
fn single_tensors_round_trip_as_tensors_named_tensor() {
    let dir = tensor_dir("tensor-single");
    let host = dir.host();
    let value = Value::Tensor(tensor("BF16", &[3], vec![0x80, 0x3f, 0, 0, 0xc1, 0xff]));
    let saved = host.save("t", &value, &[]).expect("save");
    assert_eq!(saved.record.meta.serializer, "tensor");
    assert_eq!(saved.record.meta.obj_type, "tensor");
    assert_eq!(host.load("t").expect("load").value, value);
    assert_eq!(host.load_mapped("t").expect("load").value, value);
    StowageCmd::new(&dir, &["get", "t", "-o", "t.safetensors"]).ok();
    let out = run_python(
        "import sys; from safetensors import deserialize\n\
         for n, t in deserialize(open(sys.argv[1], 'rb').read()):\n\
         \x20   print(n, t['dtype'], t['shape'], bytes(t['data']).hex())",
        &[&dir.root.join("t.safetensors")],
    );
    assert_eq!(out.trim(), "tensor BF16 [3] 803f0000c1ff");
}

/// The file mapped at `ptr`, if any.
fn file_mapped_at(ptr: *const u8) -> Option<PathBuf> {
    file_mappings()
        .into_iter()
        .find(|(range, _)| range.contains(&(ptr as usize)))
        .map(|(_, path)| path)
}

#[test]
fn mapped_loads_point_into_the_blob_file() {
    let dir = tensor_dir("tensor-zero-copy");
    let host = dir.host();
    let data: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    let map = TensorMap {
        tensors: vec![
            ("small".into(), tensor("U8", &[3], vec![1, 2, 3])),
            ("big".into(), tensor("U8", &[4 << 20], data.clone())),
        ],
        metadata: vec![],
    };
    host.save("m", &Value::TensorMap(map), &[]).expect("save");
    let loaded = host.load_mapped("m").expect("load_mapped");
    let Value::TensorMap(back) = &loaded.value else {
        panic!("not a tensor map")
    };
    let store = fs::canonicalize(dir.root.join("store")).expect("store dir");
    for (name, t) in &back.tensors {
        let path = file_mapped_at(t.data.as_ptr())
            .unwrap_or_else(|| panic!("tensor {name} is not in any mapping"));
        assert!(
            path.starts_with(&store),
            "tensor {name} points into {}, not a blob under {}",
            path.display(),
            store.display()
        );
    }
    let big = &back
        .tensors
        .iter()
        .find(|(n, _)| n == "big")
        .expect("big")
        .1;
    assert!(big.data[..] == data[..]);
}

#[test]
fn mapped_load_of_a_1_gib_tensor_barely_moves_resident_memory() {
    const GIB: usize = 1 << 30;
    let dir = tensor_dir("tensor-1gib");
    let host = dir.host();
    {
        // calloc'd zeros: pages are only materialised as the save reads them.
        let value = Value::Tensor(tensor("F32", &[(GIB / 4) as u64], vec![0u8; GIB]));
        host.save("big", &value, &[]).expect("save 1 GiB");
    }
    let before = proc_status_bytes("VmRSS");
    let loaded = host.load_mapped("big").expect("load_mapped");
    let after = proc_status_bytes("VmRSS");
    let Value::Tensor(t) = &loaded.value else {
        panic!("not a tensor")
    };
    assert_eq!(
        (t.shape.as_slice(), t.data.len()),
        (&[(GIB / 4) as u64][..], GIB)
    );
    let path = file_mapped_at(t.data.as_ptr()).expect("data lies in a file mapping");
    assert!(
        path.starts_with(fs::canonicalize(dir.root.join("store")).expect("store dir")),
        "mapping: {}",
        path.display()
    );
    let grown = after.saturating_sub(before);
    eprintln!("load_mapped of 1 GiB: RSS {before} -> {after} bytes");
    assert!(
        grown < 64 << 20,
        "load_mapped of 1 GiB raised RSS by {} MiB",
        grown >> 20
    );
    drop(loaded);
    drop(host);
    let _ = fs::remove_dir_all(&dir.root);
}

#[test]
fn malformed_files_are_refused_with_one_line() {
    let dir = tensor_dir("tensor-malformed");
    let file = |name: &str, json: &str, data: &[u8]| {
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(json.as_bytes());
        bytes.extend_from_slice(data);
        fs::write(dir.root.join(name), bytes).expect("write file");
    };
    file(
        "overlap.safetensors",
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
        &[0, 0],
    );
    StowageCmd::new(&dir, &["put", "bad", "overlap.safetensors"]).fails(
        1,
        "error: cannot store bad: tensor: tensor `b`: data at 1 overlaps the tensor before \
         it, which ends at 2",
    );
    StowageCmd::new(&dir, &["get", "bad"]).fails(1, "error: no artifact named bad");
}

#[test]
fn show_lists_names_dtypes_shapes_and_small_values() {
    let dir = tensor_dir("tensor-show");
    let host = dir.host();
    let map = TensorMap {
        tensors: vec![
            (
                "w".into(),
                tensor(
                    "F32",
                    &[2, 2],
                    le(&[1.5f32, -2.0, 0.25, 8.0], f32::to_le_bytes),
                ),
            ),
            ("ids".into(), tensor("I64", &[16], vec![0; 128])),
        ],
        metadata: vec![("format".into(), "pt".into())],
    };
    host.save("m", &Value::TensorMap(map), &[]).expect("save");
    let out = StowageCmd::new(&dir, &["show", "m"]).ok();
    assert_eq!(
        out.trim_end(),
        "tensor_map (safetensors v1): 2 tensors, 144 bytes of data\n  \
         ids: I64 [16], 128 bytes\n  \
         w: F32 [2, 2], 16 bytes = [1.5, -2, 0.25, 8]\n  \
         metadata format = \"pt\""
    );
}
