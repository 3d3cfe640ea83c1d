//! Fuzzes the composite skeleton reader (MessagePack with typed part
//! references and a parts table): any bytes give a skeleton or an error,
//! and a decoded skeleton rebuilds (from placeholder parts) and renders as
//! JSON with an answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage::composite::{Skeleton, SKELETON_BLOB};
use stowage::{Buffer, Value};

fuzz_target!(|data: &[u8]| {
    let blobs = vec![
        (SKELETON_BLOB.to_owned(), Buffer::from_vec(data.to_vec())),
        ("p0.data".to_owned(), Buffer::from_vec(vec![0; 8])),
        ("p1.data".to_owned(), Buffer::from_vec(vec![1; 8])),
    ];
    if let Ok(skeleton) = Skeleton::decode(&blobs) {
        let _ = skeleton.to_json(&|i, part| serde_json::json!({ "$part": part.path, "i": i }));
        let _ = skeleton.rebuild(vec![Value::Null; skeleton.parts.len()]);
    }
});
