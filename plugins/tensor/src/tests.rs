//! Unit tests: one per malformed-header class on a tiny byte literal
//! (asserting the [`FormatError`] variant), the accepted edge cases, the
//! writer against the `safetensors` crate byte for byte, and in-process
//! round trips through the SDK's ABI structs.

use std::borrow::Cow;

use stowage_plugin_api::testing::PluginTest;
use stowage_plugin_api::{ErrorKind, Plugin, Tensor, TensorMap, Value};

use crate::*;

/// A file with header `json` (unpadded) and data section `data`.
fn file(json: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[track_caller]
fn error(bytes: &[u8]) -> FormatError {
    match parse(bytes) {
        Ok(header) => panic!("accepted: {header:?}"),
        Err(error) => error,
    }
}

#[track_caller]
fn error_of(json: &str, data: &[u8]) -> FormatError {
    error(&file(json, data))
}

fn f32_entry(name: &str, shape: &str, offsets: &str) -> String {
    format!(r#""{name}":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}"#)
}

// --- one test per malformed class ---------------------------------------

#[test]
fn file_shorter_than_the_size_field_is_refused() {
    assert!(matches!(
        error(b"\x02\0\0"),
        FormatError::FileTooShort { len: 3 }
    ));
}

#[test]
fn header_size_too_small_is_refused() {
    assert!(matches!(
        error(b"\x01\0\0\0\0\0\0\0{"),
        FormatError::HeaderTooSmall { size: 1 }
    ));
}

#[test]
fn header_size_over_100_mb_is_refused() {
    let mut bytes = (MAX_HEADER_SIZE as u64 + 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert!(matches!(
        error(&bytes),
        FormatError::HeaderTooLarge { size } if size == MAX_HEADER_SIZE as u64 + 1
    ));
    assert!(matches!(
        error(&u64::MAX.to_le_bytes()),
        FormatError::HeaderTooLarge { size: u64::MAX }
    ));
}

#[test]
fn header_past_end_of_file_is_refused() {
    assert!(matches!(
        error(b"\x10\0\0\0\0\0\0\0{}"),
        FormatError::HeaderPastEnd {
            size: 16,
            file_len: 10
        }
    ));
}

#[test]
fn header_not_utf8_is_refused() {
    assert!(matches!(
        error(b"\x03\0\0\0\0\0\0\0{\xff}"),
        FormatError::HeaderNotUtf8 { valid_up_to: 1 }
    ));
}

#[test]
fn header_not_json_is_refused() {
    assert!(matches!(
        error_of("{\"a\":", b""),
        FormatError::HeaderNotJson(_)
    ));
    assert!(matches!(
        error_of("{}{}", b""),
        FormatError::HeaderNotJson(_)
    ));
}

#[test]
fn header_not_an_object_is_refused() {
    assert!(matches!(
        error_of("[1, 2]", b""),
        FormatError::HeaderNotObject
    ));
    assert!(matches!(
        error_of("\"{}\"", b""),
        FormatError::HeaderNotObject
    ));
}

#[test]
fn unknown_dtype_is_refused() {
    let json = r#"{"x":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        error_of(json, &[0; 4]),
        FormatError::UnknownDtype { name, dtype } if name == "x" && dtype == "\"F33\""
    ));
    let json = r#"{"x":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        error_of(json, &[0; 4]),
        FormatError::UnknownDtype { .. }
    ));
    // Names are case-sensitive, as in the reference reader.
    let json = r#"{"x":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}"#;
    assert!(matches!(
        error_of(json, &[0; 4]),
        FormatError::UnknownDtype { .. }
    ));
}

#[test]
fn offsets_out_of_bounds_are_refused() {
    let json = format!("{{{}}}", f32_entry("x", "[2]", "[0,8]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::OffsetsOutOfBounds { name, end: 8, data_len: 4 } if name == "x"
    ));
    let json = format!(
        "{{{}}}",
        f32_entry("x", "[0]", "[18446744073709551615,18446744073709551615]")
    );
    assert!(matches!(
        error_of(&json, b""),
        FormatError::OffsetsOutOfBounds { .. }
    ));
}

#[test]
fn reversed_offsets_are_refused() {
    let json = format!("{{{}}}", f32_entry("x", "[1]", "[4,0]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::ReversedOffsets { name, begin: 4, end: 0 } if name == "x"
    ));
}

#[test]
fn overlapping_offsets_are_refused() {
    let json = format!(
        "{{{},{}}}",
        f32_entry("a", "[2]", "[0,8]"),
        f32_entry("b", "[1]", "[4,8]")
    );
    assert!(matches!(
        error_of(&json, &[0; 8]),
        FormatError::OverlappingOffsets { name, begin: 4, previous_end: 8 } if name == "b"
    ));
}

#[test]
fn a_gap_between_tensors_is_refused() {
    let json = format!(
        "{{{},{}}}",
        f32_entry("a", "[1]", "[0,4]"),
        f32_entry("b", "[1]", "[8,12]")
    );
    assert!(matches!(
        error_of(&json, &[0; 12]),
        FormatError::GapBeforeTensor { name, begin: 8, previous_end: 4 } if name == "b"
    ));
    let json = format!("{{{}}}", f32_entry("a", "[1]", "[4,8]"));
    assert!(matches!(
        error_of(&json, &[0; 8]),
        FormatError::GapBeforeTensor {
            begin: 4,
            previous_end: 0,
            ..
        }
    ));
}

#[test]
fn data_after_the_last_tensor_is_refused() {
    let json = format!("{{{}}}", f32_entry("a", "[1]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 5]),
        FormatError::TrailingData {
            covered: 4,
            data_len: 5
        }
    ));
    assert!(matches!(
        error_of("{}", b"x"),
        FormatError::TrailingData {
            covered: 0,
            data_len: 1
        }
    ));
}

#[test]
fn shape_size_differing_from_byte_length_is_refused() {
    let json = format!("{{{}}}", f32_entry("x", "[3]", "[0,8]"));
    assert!(matches!(
        error_of(&json, &[0; 8]),
        FormatError::SizeMismatch { name, expected: 12, actual: 8, .. } if name == "x"
    ));
}

#[test]
fn shape_overflow_is_refused() {
    let json = format!("{{{}}}", f32_entry("x", "[4294967296,4294967296]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::ShapeOverflow { name, .. } if name == "x"
    ));
    // Elements fit u64, bytes do not.
    let json = format!("{{{}}}", f32_entry("x", "[4611686018427387904]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::ShapeOverflow { .. }
    ));
    // A dimension beyond u64.
    let json = format!("{{{}}}", f32_entry("x", "[18446744073709551616]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::ShapeOverflow { .. }
    ));
}

#[test]
fn negative_dimension_is_refused() {
    let json = format!("{{{}}}", f32_entry("x", "[2,-1]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::NegativeDimension { name, dim } if name == "x" && dim == "-1"
    ));
}

#[test]
fn duplicate_names_are_refused() {
    let json = format!(
        "{{{},{}}}",
        f32_entry("a", "[1]", "[0,4]"),
        f32_entry("a", "[1]", "[4,8]")
    );
    assert!(matches!(
        error_of(&json, &[0; 8]),
        FormatError::DuplicateName { name } if name == "a"
    ));
    let json = r#"{"__metadata__":{},"__metadata__":{}}"#;
    assert!(matches!(
        error_of(json, b""),
        FormatError::DuplicateName { .. }
    ));
}

#[test]
fn non_string_metadata_is_refused() {
    let json = r#"{"__metadata__":{"ok":"yes","epoch":3}}"#;
    assert!(matches!(
        error_of(json, b""),
        FormatError::NonStringMetadata { key } if key == "epoch"
    ));
    let json = r#"{"__metadata__":["a"]}"#;
    assert!(matches!(
        error_of(json, b""),
        FormatError::MetadataNotObject
    ));
}

#[test]
fn malformed_entries_are_refused() {
    assert!(matches!(
        error_of(r#"{"x":[1]}"#, b""),
        FormatError::EntryNotObject { name } if name == "x"
    ));
    assert!(matches!(
        error_of(r#"{"x":{"dtype":"F32","shape":[0]}}"#, b""),
        FormatError::MissingField {
            field: "data_offsets",
            ..
        }
    ));
    let json = format!("{{{}}}", f32_entry("x", "[1.5]", "[0,4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::InvalidShape { .. }
    ));
    let json = format!("{{{}}}", f32_entry("x", "[1]", "[0]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::InvalidOffsets { .. }
    ));
    let json = format!("{{{}}}", f32_entry("x", "[1]", "[0,-4]"));
    assert!(matches!(
        error_of(&json, &[0; 4]),
        FormatError::InvalidOffsets { .. }
    ));
}

#[test]
fn sub_byte_data_must_end_on_a_byte_boundary() {
    let json = r#"{"x":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}"#;
    assert!(matches!(
        error_of(json, &[0]),
        FormatError::PartialByte { bits: 12, .. }
    ));
    let json = r#"{"x":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}"#;
    assert!(parse(&file(json, &[0, 0])).is_ok());
}

#[test]
fn errors_are_one_lowercase_line() {
    let json = format!("{{{}}}", f32_entry("x", "[3]", "[0,8]"));
    assert_eq!(
        error_of(&json, &[0; 8]).to_string(),
        "tensor `x`: F32 [3] needs 12 bytes, has 8"
    );
}

#[test]
fn mutated_files_never_panic() {
    let good = file(
        &format!(
            r#"{{"__metadata__":{{"k":"v"}},{},{}}}"#,
            f32_entry("a", "[2]", "[0,8]"),
            f32_entry("b", "[]", "[8,12]")
        ),
        &[0; 12],
    );
    assert!(parse(&good).is_ok());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let mut bytes = good.clone();
        for _ in 0..=(next() % 4) {
            let at = (next() as usize) % bytes.len();
            bytes[at] = next() as u8;
        }
        bytes.truncate((next() as usize) % (bytes.len() + 1) + bytes.len() / 2);
        let _ = parse(&bytes);
        let _ = PluginTest::new(TensorPlugin).ingest(&bytes, &[]);
    }
}

// --- what is accepted -----------------------------------------------------

#[test]
fn scalars_zero_size_tensors_and_empty_files_parse() {
    let json = r#"{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"z":{"dtype":"I32","shape":[0,3],"data_offsets":[8,8]},"y":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}}"#;
    let bytes = file(json, &7f64.to_le_bytes());
    let header = parse(&bytes).expect("valid");
    let shapes: Vec<_> = header.tensors.iter().map(|t| t.shape.clone()).collect();
    assert_eq!(shapes, [vec![], vec![0, 3], vec![0]]);
    assert_eq!(header.tensors[0].data, 7f64.to_le_bytes());
    assert!(parse(&file("{}", b"")).expect("empty").tensors.is_empty());
    assert!(parse(&file("{}      ", b"")).is_ok(), "space padding");
}

#[test]
fn parsed_tensors_borrow_from_the_input() {
    let bytes = file(&format!("{{{}}}", f32_entry("a", "[2]", "[0,8]")), &[1; 8]);
    let header = parse(&bytes).expect("valid");
    let range = bytes.as_ptr_range();
    assert!(range.contains(&header.tensors[0].data.as_ptr()));
}

/// Every dtype name the `safetensors` crate serializes, with its bit size.
const DTYPES: &[(&str, usize)] = &[
    ("BOOL", 8),
    ("U8", 8),
    ("I8", 8),
    ("U16", 16),
    ("I16", 16),
    ("U32", 32),
    ("I32", 32),
    ("U64", 64),
    ("I64", 64),
    ("F16", 16),
    ("BF16", 16),
    ("F32", 32),
    ("F64", 64),
    ("C64", 64),
    ("F8_E5M2", 8),
    ("F8_E4M3", 8),
    ("F8_E8M0", 8),
    ("F8_E4M3FNUZ", 8),
    ("F8_E5M2FNUZ", 8),
    ("F6_E2M3", 6),
    ("F6_E3M2", 6),
    ("F4", 4),
];

#[test]
fn every_safetensors_dtype_is_known() {
    for &(name, bits) in DTYPES {
        let dtype = header::parse_dtype(name).unwrap_or_else(|| panic!("{name} unknown"));
        assert_eq!((dtype.to_string().as_str(), dtype.bitsize()), (name, bits));
    }
}

fn owned_tensor(dtype: &str, shape: &[u64], data: Vec<u8>) -> Tensor<'static> {
    Tensor {
        dtype: Cow::Owned(dtype.to_owned()),
        shape: shape.to_vec(),
        data: Cow::Owned(data),
    }
}

/// A map holding one tensor of every dtype (4 elements; 8 for sub-byte ones).
fn every_dtype_map() -> TensorMap<'static> {
    let tensors = DTYPES
        .iter()
        .map(|&(name, bits)| {
            let elements = if bits < 8 { 8 } else { 4 };
            let bytes = elements * bits / 8;
            let data = (0..bytes).map(|i| (i * 37 + bits) as u8).collect();
            let key = format!("t_{}", name.to_lowercase());
            (
                Cow::Owned(key),
                owned_tensor(name, &[elements as u64], data),
            )
        })
        .collect();
    TensorMap {
        tensors,
        metadata: vec![(Cow::Borrowed("format"), Cow::Borrowed("np"))],
    }
}

#[test]
fn writes_the_same_bytes_as_the_safetensors_crate() {
    use safetensors::tensor::TensorView;
    let map = every_dtype_map();
    let stored = PluginTest::new(TensorPlugin)
        .serialize(&mut Value::TensorMap(map.clone()), &[])
        .expect("serialize");
    let views: Vec<(String, TensorView<'_>)> = map
        .tensors
        .iter()
        .map(|(name, t)| {
            let dtype = header::parse_dtype(&t.dtype).expect("known");
            let shape = t.shape.iter().map(|&d| d as usize).collect();
            let view = TensorView::new(dtype, shape, &t.data).expect("valid view");
            (name.to_string(), view)
        })
        .collect();
    let info = std::collections::HashMap::from([("format".to_owned(), "np".to_owned())]);
    let expected = safetensors::serialize(views, Some(info)).expect("crate serializes");
    assert_eq!(stored.blobs.len(), 1);
    assert_eq!(stored.blobs[0].0, BLOB);
    assert_eq!(stored.blobs[0].1, expected);
}

#[test]
fn the_safetensors_crate_reads_what_we_write_the_same_way() {
    // A file the crate writes parses here with the same tensors.
    let map = every_dtype_map();
    let stored = PluginTest::new(TensorPlugin)
        .serialize(&mut Value::TensorMap(map.clone()), &[])
        .expect("serialize");
    let file = &stored.blobs[0].1;
    let theirs = safetensors::SafeTensors::deserialize(file).expect("crate reads it");
    let ours = parse(file).expect("we read it");
    assert_eq!(theirs.len(), ours.tensors.len());
    for entry in &ours.tensors {
        let view = theirs.tensor(&entry.name).expect("same names");
        assert_eq!(view.dtype(), entry.dtype);
        let shape: Vec<u64> = view.shape().iter().map(|&d| d as u64).collect();
        assert_eq!(shape, entry.shape);
        assert_eq!(view.data(), entry.data);
    }
}

#[test]
fn tensor_maps_round_trip_with_metadata() {
    let test = PluginTest::new(TensorPlugin);
    let map = every_dtype_map();
    let stored = test
        .serialize(&mut Value::TensorMap(map.clone()), &[])
        .expect("serialize");
    assert_eq!(
        stored.metadata,
        Metadata::new("tensor_map", "safetensors", 1)
    );
    let Value::TensorMap(back) = test
        .deserialize(&stored.metadata, &stored.blobs)
        .expect("deserialize")
    else {
        panic!("not a tensor map")
    };
    assert_eq!(back.metadata, map.metadata);
    let mut expected = map.tensors.clone();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let mut got = back.tensors.clone();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
}

#[test]
fn single_tensors_scalars_and_zero_size_round_trip() {
    let test = PluginTest::new(TensorPlugin);
    for tensor in [
        owned_tensor("F64", &[], 2.5f64.to_le_bytes().to_vec()),
        owned_tensor("I16", &[0, 5], vec![]),
        owned_tensor("BF16", &[2, 1], vec![0x80, 0x3f, 0x00, 0xc0]),
    ] {
        let stored = test
            .serialize(&mut Value::Tensor(tensor.clone()), &[])
            .expect("serialize");
        assert_eq!(stored.metadata, Metadata::new("tensor", "safetensors", 1));
        let Value::Tensor(back) = test
            .deserialize(&stored.metadata, &stored.blobs)
            .expect("deserialize")
        else {
            panic!("not a tensor")
        };
        assert_eq!(format!("{back:?}"), format!("{tensor:?}"));
    }
}

#[track_caller]
fn refused(value: Value<'_>, expected: &str) {
    let mut value = value;
    let error = PluginTest::new(TensorPlugin)
        .serialize(&mut value, &[])
        .expect_err("refused");
    assert_eq!(
        (error.kind, error.message.as_str()),
        (ErrorKind::InvalidInput, expected)
    );
}

#[test]
fn invalid_values_are_refused_before_anything_is_written() {
    refused(
        Value::Tensor(owned_tensor("F31", &[1], vec![0; 4])),
        "tensor `tensor`: unknown dtype \"F31\"",
    );
    refused(
        Value::Tensor(owned_tensor("F32", &[2], vec![0; 4])),
        "tensor `tensor`: F32 [2] needs 8 bytes, has 4",
    );
    let map = |names: &[&'static str], keys: &[&'static str]| {
        Value::TensorMap(TensorMap {
            tensors: names
                .iter()
                .map(|n| (Cow::Borrowed(*n), owned_tensor("U8", &[1], vec![1])))
                .collect(),
            metadata: keys
                .iter()
                .map(|k| (Cow::Borrowed(*k), Cow::Borrowed("v")))
                .collect(),
        })
    };
    refused(map(&["a", "a"], &[]), "tensor `a` appears more than once");
    refused(
        map(&["__metadata__"], &[]),
        "a tensor may not be named `__metadata__`",
    );
    refused(
        map(&["a"], &["k", "k"]),
        "metadata key `k` appears more than once",
    );
}

#[test]
fn ingest_validates_and_stores_the_file_byte_for_byte() {
    let test = PluginTest::new(TensorPlugin);
    let good = file(&format!("{{{}}}", f32_entry("a", "[1]", "[0,4]")), &[0; 4]);
    let stored = test.ingest(&good, &[]).expect("ingest");
    assert_eq!(stored.blobs, vec![(BLOB.to_owned(), good.clone())]);
    assert_eq!(
        test.export(&stored.metadata, &stored.blobs)
            .expect("export"),
        good
    );
    let bad = file(&format!("{{{}}}", f32_entry("a", "[2]", "[0,4]")), &[0; 4]);
    let error = test.ingest(&bad, &[]).expect_err("refused");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
}

#[test]
fn sniff_claims_safetensors_prefixes_only() {
    let plugin = TensorPlugin;
    assert!(plugin.sniff(&file("{}", b"")));
    assert!(plugin.sniff(&file(&format!("{{{}}}", f32_entry("a", "[1]", "[0,4]")), b"")[..12]));
    assert!(!plugin.sniff(b"{\"a\": 1}"));
    assert!(!plugin.sniff(b"\x02\0\0\0\0\0\0\0[]"));
    assert!(!plugin.sniff(&u64::MAX.to_le_bytes()));
    assert!(!plugin.sniff(b"PAR1"));
}

#[test]
fn describe_lists_tensors_and_small_values() {
    let test = PluginTest::new(TensorPlugin);
    let map = TensorMap {
        tensors: vec![
            (
                Cow::Borrowed("w"),
                owned_tensor("F16", &[2], vec![0x00, 0x3c, 0x00, 0xc0]),
            ),
            (
                Cow::Borrowed("big"),
                owned_tensor("U8", &[2, 8], vec![1; 16]),
            ),
            (
                Cow::Borrowed("f8"),
                owned_tensor("F8_E4M3", &[1], vec![0x38]),
            ),
        ],
        metadata: vec![(Cow::Borrowed("format"), Cow::Borrowed("pt"))],
    };
    let stored = test
        .serialize(&mut Value::TensorMap(map), &[])
        .expect("serialize");
    let text = test
        .describe(&stored.metadata, &stored.blobs)
        .expect("describe");
    assert_eq!(
        text,
        "tensor_map (safetensors v1): 3 tensors, 21 bytes of data\n  \
         w: F16 [2], 4 bytes = [1, -2]\n  \
         f8: F8_E4M3 [1], 1 bytes = [0x38]\n  \
         big: U8 [2, 8], 16 bytes\n  \
         metadata format = \"pt\""
    );
}
