//! Unit tests of the store: round trips per storage kind, dedup, batch
//! atomicity, overwrite, remove + gc, verify and corruption, torn logs,
//! reopen, two instances on one directory, threads, and failpoints (through
//! a child process running this same test binary).
//!
//! Decision: every test works in its own directory under
//! `std::env::temp_dir()`, named from the pid and a counter, removed on drop.

use super::writer::Body;
use super::*;

use std::io::Write as _;
use std::process::Command;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

struct TestDir(PathBuf);

impl TestDir {
    fn new(tag: &str) -> TestDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("stowage-store-{}-{n}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create test dir");
        TestDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn meta(obj_type: &str) -> RecordMeta {
    RecordMeta {
        obj_type: obj_type.into(),
        encoding: "msgpack".into(),
        encoding_version: 1,
        serializer: "fallback".into(),
        serializer_version: "0.1.0".into(),
        serializer_info: vec![("source".into(), "test".into())],
        ..RecordMeta::default()
    }
}

type Blobs<'a> = &'a [(&'a str, BlobLayout, &'a [u8])];

fn pending(store: &DirStore, name: &str, blobs: Blobs<'_>) -> PendingArtifact {
    let mut writer = store.writer(name).expect("writer");
    for (blob, layout, data) in blobs {
        writer.begin_blob(blob, *layout).expect("begin_blob");
        for chunk in data.chunks(7919) {
            writer.write(chunk).expect("write");
        }
    }
    writer.finish(meta("bytes")).expect("finish")
}

fn save(store: &DirStore, name: &str, blobs: Blobs<'_>) -> Record {
    let mut records = store
        .commit(vec![pending(store, name, blobs)])
        .expect("commit");
    records.remove(0)
}

fn load(store: &DirStore, name: &str) -> Vec<Vec<u8>> {
    let record = store.get(name).expect("get");
    store
        .read_blobs(&record, Verify::Hash)
        .expect("read_blobs")
        .into_iter()
        .map(BlobData::into_vec)
        .collect()
}

/// Incompressible bytes (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Very compressible bytes.
fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn files_in(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .map(|e| {
            let path = e.expect("dir entry").path();
            if path.is_dir() {
                files_in(&path)
            } else {
                1
            }
        })
        .sum()
}

/// Flips one bit in place (no truncation, so live mappings stay valid).
fn flip_byte(path: &Path, offset: u64) {
    use std::io::{Read as _, Seek as _};
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open for flip");
    let mut byte = [0u8; 1];
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.read_exact(&mut byte).expect("read byte");
    byte[0] ^= 0x01;
    file.seek(SeekFrom::Start(offset)).expect("seek");
    file.write_all(&byte).expect("write byte");
}

fn only_blob(record: &Record) -> &BlobRecord {
    assert_eq!(record.blobs.len(), 1);
    &record.blobs[0]
}

// ---- round trips ----

#[test]
fn small_blob_round_trips_through_a_pack() {
    let dir = TestDir::new("small");
    let store = DirStore::open(dir.path()).expect("open");
    let record = save(
        &store,
        "small",
        &[("data", BlobLayout::Raw, b"hello store")],
    );
    let blob = only_blob(&record);
    assert_eq!(blob.storage, STORAGE_PACKED);
    assert_eq!(blob.size, 11);
    assert_eq!(blob.digest, blake3::hash(b"hello store").to_hex().as_str());
    assert_eq!(load(&store, "small"), vec![b"hello store".to_vec()]);
    let unverified = store.read_blobs(&record, Verify::None).expect("read");
    assert!(unverified[0].is_mapped());
    assert_eq!(&unverified[0][..], b"hello store");
    assert_eq!(record.meta, meta("bytes"));
    assert_eq!(
        record.format_version, 1,
        "a record without parts stays version 1"
    );
}

#[test]
fn large_raw_blob_gets_its_own_mappable_file() {
    let dir = TestDir::new("raw");
    let store = DirStore::open(dir.path()).expect("open");
    let data = noise(200 * 1024, 1);
    let record = save(&store, "tensor", &[("weights", BlobLayout::Raw, &data)]);
    let blob = only_blob(&record);
    assert_eq!(blob.storage, STORAGE_RAW);
    let path = store.blob_path(blob);
    assert_eq!(
        path,
        store
            .dir()
            .join("blobs")
            .join(&blob.digest[..2])
            .join(&blob.digest)
    );
    assert_eq!(
        fs::metadata(&path).expect("blob file").len(),
        data.len() as u64
    );
    let mapped = store.read_blobs(&record, Verify::None).expect("read");
    assert!(mapped[0].is_mapped());
    assert_eq!(&mapped[0][..], &data[..]);
    assert_eq!(load(&store, "tensor"), vec![data]);
    assert_eq!(files_in(&store.dir().join("tmp")), 0);
}

#[test]
fn raw_threshold_separates_packed_from_file_blobs() {
    let dir = TestDir::new("threshold");
    let store = DirStore::open(dir.path()).expect("open");
    let below = noise(RAW_FILE_THRESHOLD as usize - 1, 2);
    let at = noise(RAW_FILE_THRESHOLD as usize, 3);
    let record = save(
        &store,
        "edge",
        &[
            ("below", BlobLayout::Raw, &below),
            ("at", BlobLayout::Raw, &at),
        ],
    );
    assert_eq!(record.blobs[0].storage, STORAGE_PACKED);
    assert_eq!(record.blobs[1].storage, STORAGE_RAW);
    assert_eq!(load(&store, "edge"), vec![below, at]);
}

/// Large slices are hashed on a second thread while they are written, and
/// writeback is started at chunk boundaries: the digest and the bytes must
/// come out exactly as from one thread, whatever the slices' sizes and
/// wherever they cross a boundary.
#[test]
fn large_slices_hash_in_parallel_to_the_same_digest_and_bytes() {
    let dir = TestDir::new("parallel-hash");
    let store = DirStore::open(dir.path()).expect("open");
    let data = noise(2 * WRITEBACK_CHUNK as usize + 3 * PARALLEL_HASH_MIN + 17, 9);
    // A small slice (buffered, then spilled), then slices straddling the
    // parallel threshold and the writeback boundaries.
    let cuts = [
        1000,
        PARALLEL_HASH_MIN - 1,
        PARALLEL_HASH_MIN,
        WRITEBACK_CHUNK as usize + 5,
    ];
    let mut writer = store.writer("big").expect("writer");
    writer
        .begin_blob("data", BlobLayout::Raw)
        .expect("begin_blob");
    let mut rest = data.as_slice();
    for cut in cuts {
        let (piece, tail) = rest.split_at(cut);
        writer.write(piece).expect("write");
        rest = tail;
    }
    writer.write(rest).expect("write the rest");
    let pending = writer.finish(meta("bytes")).expect("finish");
    let record = store.commit(vec![pending]).expect("commit").remove(0);
    let blob = only_blob(&record);
    assert_eq!(blob.storage, STORAGE_RAW);
    assert_eq!(blob.digest, blake3::hash(&data).to_hex().as_str());
    assert_eq!(load(&store, "big"), vec![data]);
}

#[test]
fn compressible_blobs_are_zstd_packed_only_when_that_is_smaller() {
    let dir = TestDir::new("zstd");
    let store = DirStore::open(dir.path()).expect("open");
    let repetitive = text(20 * 1024);
    let random = noise(8 * 1024, 4);
    let tiny = text(1024);
    let record = save(
        &store,
        "mixed",
        &[
            ("text", BlobLayout::Compressible, &repetitive),
            ("noise", BlobLayout::Compressible, &random),
            ("tiny", BlobLayout::Compressible, &tiny),
        ],
    );
    assert_eq!(record.blobs[0].storage, STORAGE_PACKED_ZSTD);
    let BlobLocation::Pack(loc) = record.blobs[0].location else {
        panic!("not packed: {:?}", record.blobs[0].location);
    };
    assert!(loc.len < 2048, "compressed to {}", loc.len);
    assert_eq!(record.blobs[1].storage, STORAGE_PACKED);
    assert_eq!(record.blobs[2].storage, STORAGE_PACKED);
    assert_eq!(load(&store, "mixed"), vec![repetitive, random, tiny]);
    let unverified = store.read_blobs(&record, Verify::None).expect("read");
    assert!(!unverified[0].is_mapped());
    assert!(unverified[1].is_mapped());
}

#[test]
fn large_compressible_blob_streams_to_a_zstd_file() {
    let dir = TestDir::new("zstdfile");
    let store = DirStore::open(dir.path()).expect("open");
    let data = text(1536 * 1024);
    let record = save(&store, "log", &[("lines", BlobLayout::Compressible, &data)]);
    let blob = only_blob(&record);
    assert_eq!(blob.storage, STORAGE_FILE_ZSTD);
    let path = store.blob_path(blob);
    assert!(path.to_string_lossy().ends_with(".zst"));
    let on_disk = fs::metadata(&path).expect("zst file").len();
    assert!(on_disk < data.len() as u64 / 20, "{on_disk} bytes on disk");
    assert_eq!(load(&store, "log"), vec![data]);
}

#[test]
fn multi_blob_artifact_keeps_blob_names_and_order() {
    let dir = TestDir::new("multi");
    let store = DirStore::open(dir.path()).expect("open");
    let big = noise(100 * 1024, 5);
    let blobs: Vec<(&str, BlobLayout, Vec<u8>)> = vec![
        ("header", BlobLayout::Compressible, text(5000)),
        ("empty", BlobLayout::Raw, Vec::new()),
        ("body", BlobLayout::Raw, big),
        ("footer", BlobLayout::Raw, b"end".to_vec()),
    ];
    let spec: Vec<(&str, BlobLayout, &[u8])> = blobs
        .iter()
        .map(|(n, l, d)| (*n, *l, d.as_slice()))
        .collect();
    let record = save(&store, "multi", &spec);
    let names: Vec<&str> = record.blobs.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["header", "empty", "body", "footer"]);
    let expected: Vec<Vec<u8>> = blobs.into_iter().map(|(_, _, d)| d).collect();
    assert_eq!(load(&store, "multi"), expected);
    assert_eq!(record.blobs[1].size, 0);
}

#[test]
fn records_of_a_batch_share_an_rfc3339_created_time() {
    let dir = TestDir::new("created");
    let store = DirStore::open(dir.path()).expect("open");
    let batch = vec![
        pending(&store, "one", &[("b", BlobLayout::Raw, b"1")]),
        pending(&store, "two", &[("b", BlobLayout::Raw, b"2")]),
    ];
    let records = store.commit(batch).expect("commit");
    assert_eq!(records[0].created, records[1].created);
    let created = records[0].created.as_bytes();
    assert_eq!(created.len(), 20, "{}", records[0].created);
    assert_eq!((created[4], created[10], created[19]), (b'-', b'T', b'Z'));
}

#[test]
fn record_json_uses_the_stable_keys() {
    let dir = TestDir::new("json");
    let store = DirStore::open(dir.path()).expect("open");
    let record = save(&store, "j", &[("data", BlobLayout::Raw, b"x")]);
    let json = record.to_json();
    let mut keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "blobs",
            "created",
            "encoding",
            "encoding_version",
            "format_version",
            "name",
            "obj_type",
            "serializer_info",
            "written_by"
        ]
    );
    assert_eq!(json["written_by"]["serializer"], "fallback");
    assert_eq!(json["written_by"]["version"], "0.1.0");
    assert_eq!(json["serializer_info"]["source"], "test");
    let blob = json["blobs"][0].as_object().expect("blob object");
    let mut blob_keys: Vec<&str> = blob.keys().map(String::as_str).collect();
    blob_keys.sort_unstable();
    assert_eq!(blob_keys, ["digest", "name", "size", "storage"]);
    assert_eq!(json["blobs"][0]["storage"], "packed");
}

// ---- dedup and overwrite ----

#[test]
fn identical_content_is_stored_once() {
    let dir = TestDir::new("dedup");
    let store = DirStore::open(dir.path()).expect("open");
    let big = noise(100 * 1024, 6);
    let small = noise(500, 7);
    let first = save(
        &store,
        "first",
        &[
            ("big", BlobLayout::Raw, &big),
            ("small", BlobLayout::Raw, &small),
        ],
    );
    let packs = store.dir().join("packs");
    let pack_bytes = |_: ()| -> u64 {
        fs::read_dir(&packs)
            .expect("packs")
            .map(|e| e.expect("entry").metadata().expect("meta").len())
            .sum()
    };
    let before = pack_bytes(());
    let second = save(
        &store,
        "second",
        &[("b", BlobLayout::Raw, &big), ("s", BlobLayout::Raw, &small)],
    );
    assert_eq!(pack_bytes(()), before, "small blob was appended again");
    assert_eq!(files_in(&store.dir().join("blobs")), 1);
    assert_eq!(first.blobs[0].digest, second.blobs[0].digest);
    assert_eq!(first.blobs[1].location, second.blobs[1].location);
    assert_eq!(files_in(&store.dir().join("tmp")), 0);

    // Within one batch, too.
    let other = noise(700, 8);
    let batch = vec![
        pending(&store, "x", &[("o", BlobLayout::Raw, &other)]),
        pending(&store, "y", &[("o", BlobLayout::Raw, &other)]),
    ];
    let records = store.commit(batch).expect("commit");
    assert_eq!(records[0].blobs[0].location, records[1].blobs[0].location);
    assert_eq!(load(&store, "y"), vec![other]);
    assert_eq!(load(&store, "second"), vec![big, small]);
}

#[test]
fn overwrite_keeps_the_old_version_until_commit() {
    let dir = TestDir::new("overwrite");
    let store = DirStore::open(dir.path()).expect("open");
    save(&store, "a", &[("v", BlobLayout::Raw, b"old")]);
    let new_big = noise(80 * 1024, 9);
    let next = pending(
        &store,
        "a",
        &[
            ("v", BlobLayout::Raw, b"new"),
            ("big", BlobLayout::Raw, &new_big),
        ],
    );
    assert_eq!(load(&store, "a"), vec![b"old".to_vec()]);
    drop(next);
    assert_eq!(load(&store, "a"), vec![b"old".to_vec()]);
    let next = pending(
        &store,
        "a",
        &[
            ("v", BlobLayout::Raw, b"new"),
            ("big", BlobLayout::Raw, &new_big),
        ],
    );
    assert_eq!(load(&store, "a"), vec![b"old".to_vec()]);
    store.commit(vec![next]).expect("commit");
    assert_eq!(load(&store, "a"), vec![b"new".to_vec(), new_big]);
    assert_eq!(store.list().len(), 1);
}

#[test]
fn dropped_writers_and_pending_artifacts_leave_nothing_behind() {
    let dir = TestDir::new("dropped");
    let store = DirStore::open(dir.path()).expect("open");
    {
        let mut writer = store.writer("half").expect("writer");
        writer.begin_blob("big", BlobLayout::Raw).expect("begin");
        writer.write(&noise(100 * 1024, 10)).expect("write");
        assert_eq!(files_in(&store.dir().join("tmp")), 1);
    }
    let whole = pending(
        &store,
        "whole",
        &[("big", BlobLayout::Raw, &noise(100 * 1024, 11))],
    );
    assert_eq!(files_in(&store.dir().join("tmp")), 1);
    drop(whole);
    assert_eq!(files_in(&store.dir().join("tmp")), 0);
    assert!(store.list().is_empty());
    assert!(matches!(
        store.get("whole"),
        Err(StoreError::NotFound { .. })
    ));
}

// ---- batches and errors ----

#[test]
fn a_failing_artifact_aborts_the_whole_batch() {
    let dir = TestDir::new("batch");
    let store = DirStore::open(dir.path()).expect("open");
    save(&store, "keep", &[("v", BlobLayout::Raw, b"old")]);
    let log_len = fs::metadata(store.dir().join("index.log"))
        .expect("log")
        .len();

    let good_small = pending(&store, "keep", &[("v", BlobLayout::Raw, b"new")]);
    let good_large = pending(
        &store,
        "large",
        &[("v", BlobLayout::Raw, &noise(70 * 1024, 12))],
    );
    let broken = pending(
        &store,
        "broken",
        &[("v", BlobLayout::Raw, &noise(70 * 1024, 13))],
    );
    let Body::Temp { temp, .. } = &broken.blobs[0].body else {
        panic!("large blob is not in a temp file");
    };
    fs::remove_file(temp.path()).expect("simulate a lost temp file");
    let err = store
        .commit(vec![good_small, good_large, broken])
        .expect_err("batch with a broken artifact");
    assert!(
        matches!(&err, StoreError::MissingBlob { name, blob, .. } if name == "broken" && blob == "v"),
        "{err}"
    );
    let names: Vec<String> = store.list().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(load(&store, "keep"), vec![b"old".to_vec()]);
    assert_eq!(
        fs::metadata(store.dir().join("index.log"))
            .expect("log")
            .len(),
        log_len
    );
    drop(store);
    let store = DirStore::open(dir.path()).expect("reopen");
    assert_eq!(store.list().len(), 1);
    assert_eq!(files_in(&store.dir().join("tmp")), 0);

    // A writer error means there is no pending artifact to commit at all.
    let mut writer = store.writer("never").expect("writer");
    let err = writer.write(b"x").expect_err("write before begin_blob");
    assert!(matches!(err, StoreError::NoBlobInProgress { .. }), "{err}");
    assert!(matches!(
        store.get("never"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn pending_artifacts_of_another_store_are_refused() {
    let one = TestDir::new("foreign-1");
    let two = TestDir::new("foreign-2");
    let a = DirStore::open(one.path()).expect("open a");
    let b = DirStore::open(two.path()).expect("open b");
    let p = pending(&a, "x", &[("v", BlobLayout::Raw, b"1")]);
    let err = b.commit(vec![p]).expect_err("foreign");
    assert!(matches!(err, StoreError::ForeignPending { .. }), "{err}");
    assert!(b.list().is_empty() && a.list().is_empty());
}

#[test]
fn writer_misuse_is_reported() {
    let dir = TestDir::new("misuse");
    let store = DirStore::open(dir.path()).expect("open");
    for bad in ["", ".hidden", "a/b", "nul\0", &"x".repeat(256)] {
        let err = store.writer(bad).expect_err("invalid name");
        assert!(matches!(err, StoreError::InvalidName { .. }), "{err}");
    }
    let writer = store.writer("empty").expect("writer");
    let err = writer.finish(meta("t")).expect_err("no blobs");
    assert!(matches!(err, StoreError::NoBlobs { .. }), "{err}");
    assert_eq!(err.to_string(), "artifact empty has no blobs");

    let mut writer = store.writer("dup").expect("writer");
    writer.begin_blob("a", BlobLayout::Raw).expect("begin");
    let err = writer.begin_blob("a", BlobLayout::Raw).expect_err("dup");
    assert!(matches!(err, StoreError::DuplicateBlob { .. }), "{err}");
    let err = writer
        .begin_blob("", BlobLayout::Raw)
        .expect_err("empty blob name");
    assert!(matches!(err, StoreError::InvalidBlobName { .. }), "{err}");
    writer.write(b"still usable").expect("write");
    assert_eq!(writer.blob_count(), 1);
    let p = writer.finish(meta("t")).expect("finish");
    assert_eq!((p.name(), p.blob_count()), ("dup", 1));
    assert!(store.commit(Vec::new()).expect("empty batch").is_empty());
}

#[test]
fn missing_artifacts_are_not_found_with_the_exact_message() {
    let dir = TestDir::new("notfound");
    let store = DirStore::open(dir.path()).expect("open");
    let err = store.get("nope").expect_err("absent");
    assert!(matches!(&err, StoreError::NotFound { name } if name == "nope"));
    assert_eq!(err.to_string(), "no artifact named nope");
    let err = store.remove("nope").expect_err("absent");
    assert_eq!(err.to_string(), "no artifact named nope");
}

// ---- remove and gc ----

#[test]
fn remove_then_gc_collects_only_unreferenced_data() {
    let dir = TestDir::new("gc");
    let store = DirStore::open(dir.path()).expect("open");
    let a_big = noise(90 * 1024, 14);
    let b_big = noise(90 * 1024, 15);
    let shared_zst = text(1200 * 1024);
    let a = save(
        &store,
        "a",
        &[
            ("big", BlobLayout::Raw, &a_big),
            ("log", BlobLayout::Compressible, &shared_zst),
        ],
    );
    save(
        &store,
        "b",
        &[
            ("big", BlobLayout::Raw, &b_big),
            ("log", BlobLayout::Compressible, &shared_zst),
            ("small", BlobLayout::Raw, b"b"),
        ],
    );
    assert_eq!(files_in(&store.dir().join("blobs")), 3);

    let report = store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(report, GcReport::default(), "nothing is garbage yet");

    let removed = store.remove("a").expect("remove");
    assert_eq!(removed, Listed::Record(a.clone()));
    assert!(matches!(store.get("a"), Err(StoreError::NotFound { .. })));
    assert!(
        store.blob_path(&a.blobs[0]).exists(),
        "remove keeps data until gc"
    );

    let report = store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(report.blob_files_removed, 1);
    assert!(report.bytes_freed >= 90 * 1024);
    assert!(!store.blob_path(&a.blobs[0]).exists());
    assert!(
        store.blob_path(&a.blobs[1]).exists(),
        "shared zst file is live"
    );
    assert_eq!(load(&store, "b")[0], b_big);
    assert!(store.verify().expect("verify").is_ok());
    let err = store.read_blobs(&a, Verify::Hash).expect_err("collected");
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
}

#[test]
fn gc_deletes_dead_packs_and_compacts_mostly_dead_ones() {
    let dir = TestDir::new("gcpacks");
    let store = DirStore::open(dir.path()).expect("open");
    store.commit.lock().expect("commit state").pack_limit = 4096;
    // pack 1: p1a + p1b; pack 2: p2big + p2small; pack 3: p3.
    let (p1a, p1b) = (noise(2000, 20), noise(2000, 21));
    let (p2big, p2small) = (noise(3000, 22), noise(1100, 23));
    let p3 = noise(3000, 24);
    store
        .commit(vec![
            pending(&store, "p1a", &[("v", BlobLayout::Raw, &p1a)]),
            pending(&store, "p1b", &[("v", BlobLayout::Raw, &p1b)]),
        ])
        .expect("commit 1");
    save(
        &store,
        "spacer",
        &[("v", BlobLayout::Raw, &noise(2500, 25))],
    );
    store
        .commit(vec![
            pending(&store, "p2big", &[("v", BlobLayout::Raw, &p2big)]),
            pending(&store, "p2small", &[("v", BlobLayout::Raw, &p2small)]),
        ])
        .expect("commit 2");
    save(&store, "p3", &[("v", BlobLayout::Raw, &p3)]);
    let pack_of = |name: &str| match store.get(name).expect("get").blobs[0].location {
        BlobLocation::Pack(loc) => loc.pack,
        other => panic!("{name} not packed: {other:?}"),
    };
    assert_eq!(
        [pack_of("p1a"), pack_of("p1b"), pack_of("spacer")],
        [1, 1, 1]
    );
    assert_eq!(
        [pack_of("p2big"), pack_of("p2small"), pack_of("p3")],
        [2, 2, 3]
    );

    for name in ["p1a", "p1b", "spacer", "p2big"] {
        store.remove(name).expect("remove");
    }
    let stale = store.get("p2small").expect("get");
    let report = store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!((report.packs_removed, report.packs_compacted), (1, 1));
    let packs_dir = store.dir().join("packs");
    assert!(!pack::pack_path(&packs_dir, 1).exists());
    assert!(!pack::pack_path(&packs_dir, 2).exists());
    assert_eq!(pack_of("p2small"), 3, "moved into the current pack");
    assert_eq!(load(&store, "p2small"), vec![p2small.clone()]);
    assert_eq!(load(&store, "p3"), vec![p3.clone()]);
    assert_eq!(store.get("p2small").expect("get").created, stale.created);
    // A record fetched before gc still reads (through the current record).
    let blobs = store.read_blobs(&stale, Verify::Hash).expect("stale read");
    assert_eq!(&blobs[0][..], &p2small[..]);
    assert!(store.verify().expect("verify").is_ok());

    drop(store);
    let store = DirStore::open(dir.path()).expect("reopen");
    assert_eq!(load(&store, "p2small"), vec![p2small]);
    assert_eq!(store.list().len(), 2);
    let report = store.gc_with_grace(Duration::ZERO).expect("gc again");
    assert_eq!(report, GcReport::default());
}

#[test]
fn gc_keeps_the_blobs_of_uncommitted_saves() {
    let dir = TestDir::new("gcpending");
    let a = DirStore::open(dir.path()).expect("open a");
    let b = DirStore::open(dir.path()).expect("open b");
    let big = noise(100 * 1024, 30);

    // Own pending temp files survive even a zero grace period.
    let mine = pending(&a, "mine", &[("v", BlobLayout::Raw, &big)]);
    a.gc_with_grace(Duration::ZERO).expect("gc");
    a.commit(vec![mine]).expect("commit after gc");

    // Another instance's recent temp files survive the default grace.
    let theirs = pending(
        &b,
        "theirs",
        &[("v", BlobLayout::Raw, &noise(100 * 1024, 31))],
    );
    let report = a.gc().expect("gc");
    assert_eq!(report.temp_files_removed, 0);
    b.commit(vec![theirs]).expect("commit after foreign gc");

    // Past the grace period they are collected and the commit fails cleanly.
    let late = pending(
        &b,
        "late",
        &[("v", BlobLayout::Raw, &noise(100 * 1024, 32))],
    );
    let report = a.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(report.temp_files_removed, 1);
    let err = b.commit(vec![late]).expect_err("temp collected");
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
    assert!(matches!(a.get("late"), Err(StoreError::NotFound { .. })));
    assert_eq!(load(&a, "mine"), vec![big]);
    assert!(a.verify().expect("verify").is_ok());
}

// ---- integrity ----

#[test]
fn verify_catches_a_flipped_byte_in_a_raw_blob() {
    let dir = TestDir::new("flipraw");
    let store = DirStore::open(dir.path()).expect("open");
    let record = save(
        &store,
        "raw",
        &[("v", BlobLayout::Raw, &noise(70 * 1024, 40))],
    );
    save(&store, "fine", &[("v", BlobLayout::Raw, b"fine")]);
    flip_byte(&store.blob_path(&record.blobs[0]), 1234);
    let report = store.verify().expect("verify");
    assert_eq!((report.artifacts, report.blobs), (2, 2));
    assert_eq!(report.issues.len(), 1);
    let issue = &report.issues[0];
    assert_eq!(
        (issue.artifact.as_str(), issue.blob.as_deref()),
        ("raw", Some("v"))
    );
    assert!(
        matches!(issue.error, StoreError::Corrupt { .. }),
        "{}",
        issue.error
    );
}

#[test]
fn verify_catches_a_flipped_byte_in_a_pack() {
    let dir = TestDir::new("flippack");
    let store = DirStore::open(dir.path()).expect("open");
    save(&store, "before", &[("v", BlobLayout::Raw, b"before")]);
    let record = save(
        &store,
        "packed",
        &[("v", BlobLayout::Raw, b"some packed bytes")],
    );
    save(&store, "after", &[("v", BlobLayout::Raw, b"after")]);
    let BlobLocation::Pack(loc) = record.blobs[0].location else {
        panic!("not packed");
    };
    flip_byte(&store.blob_path(&record.blobs[0]), loc.offset + 3);
    let report = store.verify().expect("verify");
    assert_eq!(report.issues.len(), 1, "{:?}", report.issues);
    assert_eq!(report.issues[0].artifact, "packed");
    assert!(matches!(report.issues[0].error, StoreError::Corrupt { .. }));
}

#[test]
fn verify_reports_a_deleted_blob_file() {
    let dir = TestDir::new("deleted");
    let store = DirStore::open(dir.path()).expect("open");
    let record = save(
        &store,
        "raw",
        &[("w", BlobLayout::Raw, &noise(70 * 1024, 41))],
    );
    let path = store.blob_path(&record.blobs[0]);
    fs::remove_file(&path).expect("delete blob");
    let report = store.verify().expect("verify");
    assert_eq!(report.issues.len(), 1);
    match &report.issues[0].error {
        StoreError::MissingBlob {
            name,
            blob,
            path: p,
        } => {
            assert_eq!((name.as_str(), blob.as_str(), p), ("raw", "w", &path));
        }
        other => panic!("unexpected {other}"),
    }
    let err = store
        .read_blobs(&record, Verify::None)
        .expect_err("missing");
    assert!(matches!(err, StoreError::MissingBlob { .. }), "{err}");
}

#[test]
fn hashed_reads_refuse_corrupt_data() {
    let dir = TestDir::new("refuse");
    let store = DirStore::open(dir.path()).expect("open");
    let data = noise(70 * 1024, 42);
    let record = save(&store, "raw", &[("v", BlobLayout::Raw, &data)]);
    flip_byte(&store.blob_path(&record.blobs[0]), 10);
    let err = store
        .read_blobs(&record, Verify::Hash)
        .expect_err("corrupt");
    match &err {
        StoreError::Corrupt {
            name,
            blob,
            expected,
            actual,
        } => {
            assert_eq!((name.as_str(), blob.as_str()), ("raw", "v"));
            assert_eq!(expected, &record.blobs[0].digest);
            assert_ne!(expected, actual);
        }
        other => panic!("unexpected {other}"),
    }
    assert!(err
        .to_string()
        .starts_with("blob v of artifact raw is corrupt"));
    // Unverified reads serve what is on disk.
    let served = store.read_blobs(&record, Verify::None).expect("unverified");
    assert_eq!(served[0][10], data[10] ^ 1);

    // A damaged zstd frame in a pack is refused too.
    let zrec = save(
        &store,
        "z",
        &[("t", BlobLayout::Compressible, &text(10_000))],
    );
    let BlobLocation::Pack(loc) = zrec.blobs[0].location else {
        panic!("not packed");
    };
    assert!(loc.zstd);
    flip_byte(&store.blob_path(&zrec.blobs[0]), loc.offset + loc.len / 2);
    let err = store
        .read_blobs(&zrec, Verify::Hash)
        .expect_err("corrupt zstd");
    assert!(
        matches!(
            err,
            StoreError::Corrupt { .. }
                | StoreError::Undecodable { .. }
                | StoreError::SizeMismatch { .. }
        ),
        "{err}"
    );
}

// ---- the log ----

#[test]
fn a_torn_index_tail_is_ignored_on_reopen() {
    let dir = TestDir::new("torn");
    let log = dir.path().join("index.log");
    let (len_before, len_after) = {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
        save(&store, "b", &[("v", BlobLayout::Raw, b"b")]);
        let before = fs::metadata(&log).expect("log").len();
        save(&store, "c", &[("v", BlobLayout::Raw, b"c")]);
        (before, fs::metadata(&log).expect("log").len())
    };
    let file = OpenOptions::new().write(true).open(&log).expect("open log");
    file.set_len((len_before + len_after) / 2)
        .expect("truncate");
    drop(file);

    let store = DirStore::open(dir.path()).expect("reopen");
    let names: Vec<String> = store.list().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(
        fs::metadata(&log).expect("log").len(),
        len_before,
        "tail cut"
    );
    save(&store, "d", &[("v", BlobLayout::Raw, b"d")]);
    drop(store);
    let store = DirStore::open(dir.path()).expect("reopen again");
    let names: Vec<String> = store.list().into_iter().map(|r| r.name).collect();
    assert_eq!(names, ["a", "b", "d"]);
    assert_eq!(load(&store, "d"), vec![b"d".to_vec()]);
}

#[test]
fn a_torn_tail_left_by_another_instance_is_cut_before_the_next_append() {
    let dir = TestDir::new("torn2");
    let log = dir.path().join("index.log");
    let a = DirStore::open(dir.path()).expect("open a");
    let b = DirStore::open(dir.path()).expect("open b");
    save(&a, "x", &[("v", BlobLayout::Raw, b"x")]);
    let mut file = OpenOptions::new().append(true).open(&log).expect("log");
    file.write_all(b"SLG1\xff\x00\x00\x00partial")
        .expect("torn bytes");
    drop(file);
    assert_eq!(b.list().len(), 1, "a reader stops before the torn frame");
    save(&b, "y", &[("v", BlobLayout::Raw, b"y")]);
    assert_eq!(a.list().len(), 2);
    drop((a, b));
    assert_eq!(DirStore::open(dir.path()).expect("reopen").list().len(), 2);
}

#[test]
fn damage_in_the_middle_of_the_log_fails_open() {
    let dir = TestDir::new("midlog");
    {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
        save(&store, "b", &[("v", BlobLayout::Raw, b"b")]);
    }
    flip_byte(&dir.path().join("index.log"), index::HEADER_LEN as u64 + 5);
    let err = DirStore::open(dir.path()).expect_err("corrupt log");
    assert!(
        matches!(err, StoreError::LogCorrupt { offset: 0, .. }),
        "{err}"
    );
}

/// Appends one checksummed frame holding `payload` to the store's log.
fn append_frame(dir: &Path, payload: &serde_json::Value) {
    let payload = serde_json::to_vec(payload).expect("json");
    let frame = index::encode_frame(&payload).expect("frame");
    let mut log = OpenOptions::new()
        .append(true)
        .open(dir.join("index.log"))
        .expect("log");
    log.write_all(&frame).expect("append");
}

#[test]
fn a_newer_record_format_is_unreadable_and_the_rest_reads() {
    let dir = TestDir::new("newer");
    {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "old", &[("v", BlobLayout::Raw, b"v1")]);
    }
    let record = serde_json::json!({
        "name": "future", "obj_type": "t", "encoding": "e", "encoding_version": 1,
        "blobs": [], "written_by": {"serializer": "s", "version": "9"},
        "serializer_info": {}, "created": "2030-01-01T00:00:00Z", "format_version": 3
    });
    append_frame(dir.path(), &serde_json::json!({ "put": [record] }));
    let store = DirStore::open(dir.path()).expect("one bad record never blocks the store");
    assert_eq!(load(&store, "old"), vec![b"v1".to_vec()]);
    let reason = "record format version 3 is newer than this build reads (2); upgrade stowage";
    let err = store.get("future").expect_err("unreadable");
    assert_eq!(
        err.to_string(),
        format!("artifact future is unreadable: {reason}")
    );
    let names: Vec<String> = store
        .listing()
        .iter()
        .map(|l| l.name().to_owned())
        .collect();
    assert_eq!(names, ["future", "old"]);
    assert_eq!(store.list().len(), 1);
    let report = store.verify().expect("verify");
    assert_eq!(
        (report.artifacts, report.blobs, report.issues.len()),
        (2, 1, 1)
    );
    assert_eq!(report.issues[0].blob, None);
    let err = store.gc().expect_err("gc refuses");
    assert_eq!(
        err.to_string(),
        "gc refused: 1 unreadable record(s), first: future; they may use any blob — rm them or upgrade stowage"
    );
    // Saving over it or removing it lifts the refusal.
    let removed = store.remove("future").expect("remove unreadable");
    assert!(matches!(removed, Listed::Unreadable(ref u) if u.reason == reason));
    store.gc().expect("gc runs again");
    assert!(store.verify().expect("verify").is_ok());
    // A new save under an unreadable record's name replaces it.
    append_frame(
        dir.path(),
        &serde_json::json!({"put": [{"name": "again", "format_version": 3}]}),
    );
    assert_eq!(store.unreadable().len(), 1);
    save(&store, "again", &[("v", BlobLayout::Raw, b"new")]);
    assert!(store.unreadable().is_empty());
    assert_eq!(load(&store, "again"), vec![b"new".to_vec()]);
    drop(store);
    let store = DirStore::open(dir.path()).expect("reopen");
    assert!(store.unreadable().is_empty(), "replay agrees");
    assert_eq!(load(&store, "again"), vec![b"new".to_vec()]);
}

#[test]
fn bad_frames_and_nameless_records_get_placeholders() {
    let dir = TestDir::new("placeholders");
    let at = {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
        fs::metadata(dir.path().join("index.log"))
            .expect("log")
            .len()
    };
    append_frame(dir.path(), &serde_json::json!({"put": "nope"}));
    let second = fs::metadata(dir.path().join("index.log"))
        .expect("log")
        .len();
    append_frame(
        dir.path(),
        &serde_json::json!({"put": [{"format_version": 1}, {"name": "x/y", "format_version": 1}]}),
    );
    let store = DirStore::open(dir.path()).expect("open");
    let bad: Vec<(String, String)> = store
        .unreadable()
        .into_iter()
        .map(|u| (u.name, u.reason))
        .collect();
    assert_eq!(
        bad,
        [
            (format!(".record-at-{at}"), "put is not an array".to_owned()),
            (format!(".record-at-{second}-0"), "missing name".to_owned()),
            ("x/y".to_owned(), "name \"x/y\" contains '/'".to_owned()),
        ]
    );
    assert_eq!(load(&store, "a"), vec![b"a".to_vec()]);
}

#[test]
fn a_record_with_an_escaping_blob_name_is_unreadable() {
    let dir = TestDir::new("escaping");
    let good = {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "good", &[("v", BlobLayout::Raw, b"payload")])
    };
    let mut json = good.to_log_json();
    json["name"] = "evil".into();
    json["blobs"][0]["name"] = "../ESCAPED".into();
    append_frame(dir.path(), &serde_json::json!({ "put": [json] }));
    let store = DirStore::open(dir.path()).expect("open");
    let err = store.get("evil").expect_err("unreadable");
    assert_eq!(
        err.to_string(),
        "artifact evil is unreadable: blob name \"../ESCAPED\" contains a path separator"
    );
}

#[test]
fn blob_names_that_could_escape_are_refused_on_write() {
    let dir = TestDir::new("blobnames");
    let store = DirStore::open(dir.path()).expect("open");
    let mut writer = store.writer("x").expect("writer");
    for (bad, reason) in [
        ("../ESCAPED", "contains a path separator"),
        ("/abs", "is an absolute path"),
        ("..", "is '.' or '..'"),
        ("a\nb", "contains a control character"),
    ] {
        let err = writer
            .begin_blob(bad, BlobLayout::Raw)
            .expect_err("refused");
        assert_eq!(
            err.to_string(),
            format!("invalid blob name {bad:?} in artifact x: {reason}")
        );
    }
}

#[test]
fn a_read_only_store_reads_and_refuses_every_write() {
    let dir = TestDir::new("readonly");
    {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
    }
    let log = dir.path().join("index.log");
    let mut file = OpenOptions::new().append(true).open(&log).expect("log");
    file.write_all(b"SLG1\xff\x00\x00\x00torn")
        .expect("torn tail");
    drop(file);
    let marker = fs::read(dir.path().join("format")).expect("marker");
    let stale_temp = dir.path().join("tmp").join("other-0.tmp");
    fs::write(&stale_temp, b"old").expect("temp");
    let len = fs::metadata(&log).expect("log").len();

    let store = DirStore::open_read_only(dir.path(), ReadOnlyWhy::Denied).expect("read-only open");
    assert!(store.is_read_only());
    assert_eq!(load(&store, "a"), vec![b"a".to_vec()]);
    assert!(store.verify().expect("verify").is_ok());
    let message = format!("store {} is read-only", store.dir().display());
    let refused = [
        store.writer("b").map(|_| ()),
        store.remove("a").map(|_| ()),
        store.gc_with_grace(Duration::ZERO).map(|_| ()),
    ];
    for result in refused {
        assert_eq!(result.expect_err("refused").to_string(), message);
    }
    assert_eq!(fs::metadata(&log).expect("log").len(), len, "tail kept");
    assert!(stale_temp.exists(), "temp files kept");
    assert_eq!(
        fs::read(dir.path().join("format")).expect("marker"),
        marker,
        "marker untouched"
    );
}

#[test]
fn a_store_without_a_log_opens_read_only_as_empty() {
    let dir = TestDir::new("ro-empty");
    let store = DirStore::open_read_only(dir.path(), ReadOnlyWhy::Denied).expect("open");
    assert!(store.list().is_empty());
    assert!(store.get("x").expect_err("absent").is_not_found());
    assert_eq!(files_in(dir.path()), 0, "nothing created");
}

#[test]
fn the_format_marker_is_written_once_and_a_newer_one_refuses_writes() {
    let dir = TestDir::new("marker");
    let marker = dir.path().join("format");
    {
        let store = DirStore::open(dir.path()).expect("open");
        assert_eq!(
            fs::read_to_string(&marker).expect("marker"),
            "stowage-store 2\n"
        );
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
        save(&store, "b", &[("v", BlobLayout::Raw, b"b")]);
    }
    // A newer format: readable, never written.
    fs::write(&marker, "stowage-store 3\n").expect("newer marker");
    let len = fs::metadata(dir.path().join("index.log"))
        .expect("log")
        .len();
    let store = DirStore::open(dir.path()).expect("open");
    assert!(store.is_read_only());
    assert_eq!(load(&store, "b"), vec![b"b".to_vec()]);
    let message = format!(
        "store {} has format 3; this build writes format 2 — upgrade stowage",
        store.dir().display()
    );
    assert_eq!(store.writer("c").expect_err("refused").to_string(), message);
    assert_eq!(store.remove("a").expect_err("refused").to_string(), message);
    assert_eq!(store.gc().expect_err("refused").to_string(), message);
    assert_eq!(
        fs::metadata(dir.path().join("index.log"))
            .expect("log")
            .len(),
        len
    );
    // A writer that opened before the upgrade checks again under the lock.
    fs::write(&marker, "stowage-store 2\n").expect("marker");
    let early = DirStore::open(dir.path()).expect("open");
    let late = pending(&early, "late", &[("v", BlobLayout::Raw, b"x")]);
    fs::write(&marker, "stowage-store 3\n").expect("upgrade");
    let err = early.commit(vec![late]).expect_err("refused");
    assert_eq!(err.to_string(), message);
    fs::write(&marker, "garbage").expect("garbage marker");
    let store = DirStore::open(dir.path()).expect("open");
    assert_eq!(
        store.writer("c").expect_err("refused").to_string(),
        format!(
            "store format marker {} is malformed: expected \"stowage-store N\"",
            store.dir().join("format").display()
        )
    );
}

#[test]
fn fuzz_entry_point_replays_logs_and_rejects_garbage() {
    let dir = TestDir::new("fuzz");
    {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "a", &[("v", BlobLayout::Raw, b"a")]);
        save(&store, "b", &[("v", BlobLayout::Raw, b"b")]);
        store.remove("a").expect("remove");
    }
    let log = fs::read(dir.path().join("index.log")).expect("log");
    assert_eq!(fuzz_replay_log(&log).expect("replay"), 1);
    assert_eq!(fuzz_replay_log(&log[..log.len() - 1]).expect("torn"), 2);
    assert_eq!(fuzz_replay_log(b"garbage").expect("no frame"), 0);
    let frame = index::encode_frame(br#"{"put":[{"format_version":1}]}"#).expect("frame");
    assert_eq!(fuzz_replay_log(&frame).expect("one unreadable record"), 1);
}

#[test]
fn reopen_sees_everything() {
    let dir = TestDir::new("reopen");
    let big = noise(100 * 1024, 50);
    let before = {
        let store = DirStore::open(dir.path()).expect("open");
        save(&store, "raw", &[("v", BlobLayout::Raw, &big)]);
        save(
            &store,
            "zst",
            &[("v", BlobLayout::Compressible, &text(1100 * 1024))],
        );
        save(
            &store,
            "packed",
            &[("v", BlobLayout::Compressible, &text(9000))],
        );
        save(&store, "gone", &[("v", BlobLayout::Raw, b"gone")]);
        save(&store, "over", &[("v", BlobLayout::Raw, b"one")]);
        save(&store, "over", &[("v", BlobLayout::Raw, b"two")]);
        store.remove("gone").expect("remove");
        store.list()
    };
    let store = DirStore::open(dir.path()).expect("reopen");
    assert_eq!(store.list(), before);
    let names: Vec<&str> = before.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["over", "packed", "raw", "zst"]);
    assert_eq!(load(&store, "over"), vec![b"two".to_vec()]);
    assert_eq!(load(&store, "raw"), vec![big]);
    assert!(store.verify().expect("verify").is_ok());
}

// ---- concurrency ----

#[test]
fn two_instances_on_one_dir_see_each_others_commits() {
    let dir = TestDir::new("two");
    let a = DirStore::open(dir.path()).expect("open a");
    let b = DirStore::open(dir.path()).expect("open b");
    save(&a, "from-a", &[("v", BlobLayout::Raw, b"a")]);
    assert_eq!(load(&b, "from-a"), vec![b"a".to_vec()]);
    save(
        &b,
        "from-b",
        &[("v", BlobLayout::Raw, &noise(70 * 1024, 60))],
    );
    assert_eq!(a.list().len(), 2);
    for i in 0..10u8 {
        let (writer, reader) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        save(writer, "shared", &[("v", BlobLayout::Raw, &[i; 10])]);
        assert_eq!(load(reader, "shared"), vec![vec![i; 10]]);
    }
    b.remove("from-a").expect("remove");
    assert!(matches!(a.get("from-a"), Err(StoreError::NotFound { .. })));
    a.gc_with_grace(Duration::ZERO).expect("gc");
    assert!(b.verify().expect("verify").is_ok());
    assert_eq!(a.list(), b.list());
}

#[test]
fn eight_threads_save_and_load_concurrently() {
    let dir = TestDir::new("threads");
    let first = Arc::new(DirStore::open(dir.path()).expect("open"));
    let second = Arc::new(DirStore::open(dir.path()).expect("open second"));
    let handles: Vec<_> = (0..8u64)
        .map(|t| {
            let store = Arc::clone(if t % 2 == 0 { &first } else { &second });
            std::thread::spawn(move || {
                for i in 0..20u64 {
                    let name = format!("t{t}-{i}");
                    let small = noise(100 + i as usize, t * 100 + i);
                    let mut blobs: Vec<(&str, BlobLayout, &[u8])> =
                        vec![("small", BlobLayout::Raw, &small)];
                    let big;
                    if i % 5 == 0 {
                        big = noise(70 * 1024, t * 1000 + i);
                        blobs.push(("big", BlobLayout::Raw, &big));
                    }
                    save(&store, &name, &blobs);
                    assert_eq!(load(&store, &name)[0], small);
                    if i > 0 {
                        let other = format!("t{}-{}", (t + 1) % 8, i - 1);
                        if let Ok(record) = store.get(&other) {
                            store.read_blobs(&record, Verify::Hash).expect("read other");
                        }
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread");
    }
    assert_eq!(first.list().len(), 160);
    assert_eq!(second.list().len(), 160);
    assert!(first.verify().expect("verify").is_ok());
    drop((first, second));
    let store = DirStore::open(dir.path()).expect("reopen");
    assert_eq!(store.list().len(), 160);
}

#[test]
fn ten_thousand_small_artifacts_commit_in_one_batch() {
    let dir = TestDir::new("many");
    let store = DirStore::open(dir.path()).expect("open");
    let started = Instant::now();
    let batch: Vec<PendingArtifact> = (0..10_000u32)
        .map(|i| {
            let mut writer = store.writer(&format!("item-{i:05}")).expect("writer");
            writer
                .begin_blob("data", BlobLayout::Compressible)
                .expect("begin");
            writer.write(&i.to_le_bytes()).expect("write");
            writer.write(b" small payload").expect("write");
            writer.finish(meta("int")).expect("finish")
        })
        .collect();
    let written = started.elapsed();
    store.commit(batch).expect("commit");
    let committed = started.elapsed();
    let started = Instant::now();
    for i in (0..10_000u32).step_by(7) {
        let record = store.get(&format!("item-{i:05}")).expect("get");
        let blobs = store.read_blobs(&record, Verify::Hash).expect("read");
        assert_eq!(&blobs[0][..4], &i.to_le_bytes());
    }
    let per_load = started.elapsed() / (10_000 / 7);
    eprintln!("10k small artifacts: writers {written:?}, commit done at {committed:?}, load {per_load:?} each (debug build)");
    assert!(committed < Duration::from_secs(20), "{committed:?}");
    assert_eq!(files_in(&store.dir().join("packs")), 1);
    drop(store);
    let started = Instant::now();
    let store = DirStore::open(dir.path()).expect("reopen");
    eprintln!("reopen with 10k records: {:?}", started.elapsed());
    assert_eq!(store.list().len(), 10_000);
}

#[test]
fn blob_data_is_cheap_to_clone_and_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<DirStore>();
    assert_send_sync::<BlobData>();
    assert_send_sync::<PendingArtifact>();
    let dir = TestDir::new("clone");
    let store = DirStore::open(dir.path()).expect("open");
    let record = save(&store, "c", &[("v", BlobLayout::Raw, b"shared")]);
    let blobs = store.read_blobs(&record, Verify::None).expect("read");
    let copy = blobs[0].clone();
    assert_eq!(copy.as_ptr(), blobs[0].as_ptr());
    assert_eq!(format!("{copy:?}"), "BlobData::Mapped(6 bytes)");
}

// ---- failpoints ----

const CHILD_DIR_VAR: &str = "STOWAGE_STORE_TEST_CHILD_DIR";

fn save_version(store: &DirStore, version: u8) {
    let big = noise(100 * 1024, u64::from(version));
    save(
        store,
        "a",
        &[
            ("big", BlobLayout::Raw, &big),
            ("small", BlobLayout::Raw, &[version; 100]),
        ],
    );
}

/// Runs inside the child process of `every_failpoint_leaves_the_old_or_the_new_artifact`;
/// a no-op in a normal test run.
#[test]
fn failpoint_child_save() {
    let Ok(dir) = std::env::var(CHILD_DIR_VAR) else {
        return;
    };
    let store = DirStore::open(Path::new(&dir)).expect("child open");
    save_version(&store, 2);
}

/// A command running one test of this binary in a child process.
fn child_command(test: &str, dir: &Path) -> Command {
    let exe = std::env::current_exe().expect("test binary");
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let mut cmd = Command::new(exe);
    cmd.args([
        &format!("{module}::{test}"),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR_VAR, dir)
    .env_remove(failpoint::ENV_VAR);
    cmd
}

fn run_child(dir: &Path, failpoint: Option<&str>) -> std::process::Output {
    let mut cmd = child_command("failpoint_child_save", dir);
    if let Some(name) = failpoint {
        cmd.env(failpoint::ENV_VAR, name);
    }
    cmd.output().expect("run child")
}

const CHILD_TAG_VAR: &str = "STOWAGE_STORE_TEST_CHILD_TAG";

/// Saves a series of artifacts tagged by the parent; the work of one
/// process in `processes_commit_concurrently_without_corrupting_the_store`.
fn save_series(store: &DirStore, tag: &str) {
    for i in 0..30u64 {
        let small = noise(200, i);
        let big = noise(70 * 1024, 1000 + i);
        let mut blobs: Vec<(&str, BlobLayout, &[u8])> = vec![("small", BlobLayout::Raw, &small)];
        if i % 10 == 0 {
            blobs.push(("big", BlobLayout::Raw, &big));
        }
        save(store, &format!("{tag}-{i}"), &blobs);
        save(
            store,
            "contended",
            &[("v", BlobLayout::Raw, tag.as_bytes())],
        );
    }
}

/// Runs inside the children of
/// `processes_commit_concurrently_without_corrupting_the_store`; a no-op in a
/// normal test run.
#[test]
fn process_child_saves_a_series() {
    let (Ok(dir), Ok(tag)) = (std::env::var(CHILD_DIR_VAR), std::env::var(CHILD_TAG_VAR)) else {
        return;
    };
    let store = DirStore::open(Path::new(&dir)).expect("child open");
    save_series(&store, &tag);
}

#[test]
fn processes_commit_concurrently_without_corrupting_the_store() {
    let dir = TestDir::new("procs");
    let store = DirStore::open(dir.path()).expect("open");
    let children: Vec<_> = ["p1", "p2"]
        .iter()
        .map(|tag| {
            child_command("process_child_saves_a_series", dir.path())
                .env(CHILD_TAG_VAR, tag)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn child")
        })
        .collect();
    save_series(&store, "parent");
    // The default grace: with zero, gc may take a child's temp file between
    // its write and its commit, which the store documents as that child's
    // loss (a writer older than the grace period), not as corruption.
    store.gc().expect("gc while children run");
    for mut child in children {
        assert!(child.wait().expect("wait").success());
    }
    let names = store.list();
    assert_eq!(names.len(), 3 * 30 + 1);
    assert!(store.verify().expect("verify").is_ok());
    let last = load(&store, "contended");
    assert!(["p1", "p2", "parent"]
        .iter()
        .any(|t| last[0] == t.as_bytes()));
    drop(store);
    let store = DirStore::open(dir.path()).expect("reopen");
    assert_eq!(store.list(), names);
}

#[test]
fn failpoint_names_are_listed_in_save_path_order() {
    assert_eq!(
        FAILPOINTS,
        [
            "after-blob",
            "after-blob-sync",
            "before-rename",
            "before-index",
            "mid-index",
            "after-index"
        ]
    );
    assert_eq!(failpoint::parse(Some("mid-index")), Some("mid-index"));
    assert_eq!(failpoint::INJECTIONS, ["open-erofs", "spool-enospc"]);
    assert_eq!(failpoint::parse(Some("open-erofs")), Some("open-erofs"));
    assert_eq!(
        failpoint::parse(Some(" before-index ")),
        Some("before-index")
    );
    assert_eq!(failpoint::parse(Some("no-such-step")), None);
    assert_eq!(failpoint::parse(Some("")), None);
    assert_eq!(failpoint::parse(None), None);
    assert_eq!(
        failpoint::armed(),
        None,
        "tests run without {}",
        failpoint::ENV_VAR
    );
}

#[test]
fn every_failpoint_leaves_the_old_or_the_new_artifact() {
    let control = TestDir::new("fp-none");
    save_version(&DirStore::open(control.path()).expect("open"), 1);
    let out = run_child(control.path(), None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        load(&DirStore::open(control.path()).expect("open"), "a")[1],
        [2; 100]
    );

    for name in FAILPOINTS {
        let dir = TestDir::new(name);
        save_version(&DirStore::open(dir.path()).expect("open"), 1);
        let out = run_child(dir.path(), Some(name));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(failpoint::EXIT_CODE),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("failpoint {name} hit")),
            "{name}: {stderr}"
        );

        let store = DirStore::open(dir.path()).expect("reopen after crash");
        let expected = if *name == "after-index" { 2 } else { 1 };
        let blobs = load(&store, "a");
        assert_eq!(blobs[1], [expected; 100], "{name}");
        assert_eq!(blobs[0], noise(100 * 1024, u64::from(expected)), "{name}");
        store.gc_with_grace(Duration::ZERO).expect("gc");
        assert!(store.verify().expect("verify").is_ok(), "{name}");
        assert_eq!(files_in(&store.dir().join("tmp")), 0, "{name}");
        assert_eq!(files_in(&store.dir().join("blobs")), 1, "{name}");
        save_version(&store, 3);
        assert_eq!(load(&store, "a")[1], [3; 100], "{name}");
    }
}

// ---- store format 2: snapshot runs, compaction, upgrade (issue #17) ----

/// The fixture store of format 1 with history (`tests/fixtures/stores`).
fn format1_fixture(dir: &TestDir) -> PathBuf {
    let from =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/stores/format-v1-history");
    let to = dir.path().join("store");
    copy_tree(&from, &to);
    to
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read fixture") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn names(store: &DirStore) -> Vec<String> {
    store.iter().map(|l| l.name().to_owned()).collect()
}

#[test]
fn compaction_keeps_live_records_and_drops_removed_and_overwritten_ones() {
    let dir = TestDir::new("compact");
    let store = DirStore::open(dir.path()).expect("open");
    store.set_compact_bytes(4096);
    let mut expected = std::collections::BTreeMap::new();
    for round in 0..6u8 {
        let batch: Vec<PendingArtifact> = (0..40u8)
            .map(|i| {
                let name = format!("r{:02}", (usize::from(i) * 7 + usize::from(round) * 3) % 60);
                expected.insert(name.clone(), vec![round, i]);
                pending(&store, &name, &[("v", BlobLayout::Raw, &[round, i])])
            })
            .collect();
        store.commit(batch).expect("commit");
        let gone = format!("r{:02}", usize::from(round) * 9 % 60);
        if expected.remove(&gone).is_some() {
            store.remove(&gone).expect("remove");
        }
    }
    let (generation, runs) = store.index_files();
    assert!(
        generation > 1 && !runs.is_empty(),
        "compacted: {generation} {runs:?}"
    );
    assert!(runs.len() <= 4, "run sizes double: {runs:?}");
    let check = |store: &DirStore| {
        assert_eq!(names(store), expected.keys().cloned().collect::<Vec<_>>());
        for (name, data) in &expected {
            assert_eq!(&load(store, name), &vec![data.clone()], "{name}");
        }
        assert!(store.get("r99").expect_err("absent").is_not_found());
        assert!(store.verify().expect("verify").is_ok());
    };
    check(&store);
    let reopened = DirStore::open(dir.path()).expect("reopen");
    check(&reopened);
    store.gc_with_grace(Duration::ZERO).expect("gc");
    let (_, runs) = store.index_files();
    assert_eq!(runs.len(), 1, "gc merges everything: {runs:?}");
    check(&store);
    check(&reopened);
    let log = fs::metadata(dir.path().join("index.log"))
        .expect("log")
        .len();
    assert_eq!(
        log,
        header_frame_len(),
        "the new generation's log holds only its header"
    );
    let run_files = fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| snapshot::is_run_file(&e.file_name().to_string_lossy()))
        .count();
    assert_eq!(run_files, 1, "stale runs deleted");
}

#[test]
fn a_reader_opened_before_a_compaction_follows_it() {
    let dir = TestDir::new("follow");
    let writer = DirStore::open(dir.path()).expect("open");
    let reader = DirStore::open_read_only(dir.path(), ReadOnlyWhy::Denied).expect("reader");
    save(&writer, "a", &[("v", BlobLayout::Raw, b"1")]);
    assert_eq!(load(&reader, "a"), vec![b"1".to_vec()]);
    writer.compact_index().expect("compact");
    save(&writer, "b", &[("v", BlobLayout::Raw, b"2")]);
    writer.remove("a").expect("remove");
    writer.compact_index().expect("compact again");
    save(&writer, "c", &[("v", BlobLayout::Raw, b"3")]);
    assert_eq!(names(&reader), ["b", "c"]);
    assert!(reader.get("a").expect_err("removed").is_not_found());
    assert_eq!(load(&reader, "c"), vec![b"3".to_vec()]);
}

#[test]
fn a_format_1_store_is_read_as_it_is_and_upgraded_at_the_first_write() {
    let dir = TestDir::new("upgrade");
    let path = format1_fixture(&dir);
    let marker = path.join("format");
    let old_log = fs::read(path.join("index.log")).expect("log");
    {
        let store = DirStore::open(&path).expect("open");
        assert_eq!(names(&store), ["a", "keep", "weights"]);
        assert!(store.verify().expect("verify").is_ok());
        assert_eq!(store.index_files(), (0, Vec::new()));
        assert_eq!(
            fs::read_to_string(&marker).expect("marker"),
            "stowage-store 1\n"
        );
        assert_eq!(
            fs::read(path.join("index.log")).expect("log"),
            old_log,
            "reading writes nothing"
        );
        save(&store, "new", &[("v", BlobLayout::Raw, b"n")]);
        assert_eq!(
            fs::read_to_string(&marker).expect("marker"),
            "stowage-store 2\n"
        );
        let (generation, runs) = store.index_files();
        assert_eq!((generation, runs.len()), (1, 1));
        assert_eq!(names(&store), ["a", "keep", "new", "weights"]);
    }
    let store = DirStore::open(&path).expect("reopen");
    assert_eq!(names(&store), ["a", "keep", "new", "weights"]);
    assert!(store.verify().expect("verify").is_ok());
    let log = fs::read(path.join("index.log")).expect("log");
    assert_eq!(
        &log[..4],
        b"SLG2",
        "a format-1 build stops at the first frame"
    );
}

#[test]
fn a_read_only_reader_of_a_format_1_store_replays_its_log() {
    let dir = TestDir::new("ro-v1");
    let path = format1_fixture(&dir);
    let store = DirStore::open_read_only(&path, ReadOnlyWhy::Denied).expect("open");
    assert_eq!(names(&store), ["a", "keep", "weights"]);
    assert!(store.verify().expect("verify").is_ok());
    assert_eq!(store.index_files(), (0, Vec::new()));
    assert!(!path.join("manifest").exists(), "a reader never upgrades");
}

#[test]
fn a_format_1_store_with_an_unreadable_record_is_not_upgraded_until_it_is_removed() {
    let dir = TestDir::new("upgrade-blocked");
    let path = format1_fixture(&dir);
    let frame =
        index::encode_frame(br#"{"put":[{"name":"odd","format_version":1}]}"#).expect("frame");
    OpenOptions::new()
        .append(true)
        .open(path.join("index.log"))
        .and_then(|mut f| f.write_all(&frame))
        .expect("append");
    let store = DirStore::open(&path).expect("open");
    save(&store, "new", &[("v", BlobLayout::Raw, b"n")]);
    assert_eq!(
        fs::read_to_string(path.join("format")).expect("marker"),
        "stowage-store 1\n"
    );
    assert_eq!(store.unreadable().len(), 1);
    store.remove("odd").expect("remove");
    save(&store, "newer", &[("v", BlobLayout::Raw, b"m")]);
    assert_eq!(
        fs::read_to_string(path.join("format")).expect("marker"),
        "stowage-store 2\n"
    );
    assert_eq!(names(&store), ["a", "keep", "new", "newer", "weights"]);
}

#[test]
fn an_unreadable_format_2_record_survives_compaction_byte_for_byte() {
    let dir = TestDir::new("compact-unreadable");
    let store = DirStore::open(dir.path()).expect("open");
    save(&store, "a", &[("v", BlobLayout::Raw, b"1")]);
    let future = serde_json::json!({"name": "future", "format_version": 99});
    let json = serde_json::to_vec(&future).expect("json");
    let mut body = 0u16.to_le_bytes().to_vec();
    body.extend_from_slice(&json);
    let mut payload = Vec::new();
    snapshot::push_item(&mut payload, snapshot::PUT, b"future", &body);
    let _locked = store.lock_for_write().expect("lock");
    store
        .append_frame(&index::encode_frame2(&payload).expect("frame"), false)
        .expect("append");
    drop(_locked);
    store.compact_index().expect("compacts");
    let reopened = DirStore::open(dir.path()).expect("reopen");
    let bad = reopened.unreadable();
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].name, "future");
    assert!(bad[0].reason.contains("99"), "{}", bad[0].reason);
    let err = reopened.gc().expect_err("gc refuses");
    assert!(matches!(err, StoreError::UnreadableRecords { .. }), "{err}");
}
