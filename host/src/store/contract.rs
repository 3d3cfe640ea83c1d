//! The store contract suite: the guarantees of `backend.rs`, tested through
//! [`StoreBackend`] only. A backend runs it by implementing [`Fixture`]
//! and invoking [`contract_tests!`](crate::contract_tests) in its test
//! module, which makes one `#[test]` per guarantee (`dir_contract.rs` does
//! this for [`DirStore`](super::DirStore)).
//!
//! Invariant: no check here touches a backend's files, keys or types.
//! What the seam cannot do (make a fresh store, reopen it read-only, damage
//! a blob, plant a record this build cannot read) the backend's [`Fixture`]
//! does with the backend's own test hooks.
//!
//! Decision: the suite is `#[cfg(test)]` inside the crate, not a public
//! test kit: every backend lives in this crate (they share the writer and
//! the record format), so a second backend runs it the same way.

use std::sync::Arc;

use super::{
    BlobData, BlobLayout, Listed, PendingArtifact, Record, RecordMeta, StoreBackend, StoreError,
    Verify,
};

/// What the suite needs beyond the seam, supplied by each backend.
pub(crate) trait Fixture {
    /// A new, empty, writable store (a new one on every call).
    fn fresh(&mut self) -> Arc<dyn StoreBackend>;

    /// A second, read-only handle on the same data as `store` (as if the
    /// store could not be written).
    fn read_only(&mut self, store: &dyn StoreBackend) -> Arc<dyn StoreBackend>;

    /// Changes the stored bytes of `record`'s blob `blob` so that they no
    /// longer hash to its digest (same size).
    fn corrupt_blob(&mut self, store: &dyn StoreBackend, record: &Record, blob: &str);

    /// Adds a live record named `name` whose record format version is newer
    /// than this build reads; returns the reason the store gives for it.
    fn plant_unreadable(&mut self, store: &dyn StoreBackend, name: &str) -> String;
}

/// One `#[test]` per contract check for the fixture `$make` builds.
#[macro_export]
#[doc(hidden)]
macro_rules! contract_tests {
    ($make:expr) => {
        $crate::contract_tests!(@each $make;
            batch_commit_returns_records_in_batch_order_and_lists_in_name_order,
            overwrite_replaces_the_record_and_a_repeated_name_keeps_the_later,
            remove_returns_the_record_and_then_the_name_is_not_found,
            a_batch_with_one_bad_artifact_commits_nothing,
            identical_bytes_are_stored_once,
            hashed_reads_and_verify_refuse_a_corrupted_blob,
            a_read_only_store_reads_and_refuses_every_write,
            unreadable_records_are_listed_and_everything_else_reads,
            names_and_blob_names_are_validated_on_write,
            gc_keeps_the_blobs_of_a_save_not_yet_committed,
            threads_commit_concurrently_and_every_save_survives,
            many_reads_give_what_single_reads_give_in_order_and_name_the_failure,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let mut fixture = $make;
                $crate::store::contract::$check(&mut fixture);
            }
        )*
    };
}

fn meta(obj_type: &str) -> RecordMeta {
    RecordMeta {
        obj_type: obj_type.into(),
        encoding: "msgpack".into(),
        encoding_version: 1,
        serializer: "contract".into(),
        serializer_version: "1.0.0".into(),
        serializer_info: Vec::new(),
        ..RecordMeta::default()
    }
}

/// A pending artifact `name` with the blobs `(blob name, bytes)`.
fn pending(store: &dyn StoreBackend, name: &str, blobs: &[(&str, &[u8])]) -> PendingArtifact {
    let mut writer = store.writer(name).expect("writer");
    for (blob, bytes) in blobs {
        writer
            .begin_blob(blob, BlobLayout::Raw)
            .expect("begin_blob");
        for chunk in bytes.chunks(4093) {
            writer.write(chunk).expect("write");
        }
    }
    writer.finish(meta("bytes")).expect("finish")
}

fn save(store: &dyn StoreBackend, name: &str, blobs: &[(&str, &[u8])]) -> Record {
    let mut records = store
        .commit(vec![pending(store, name, blobs)])
        .expect("commit");
    records.remove(0)
}

fn load(store: &dyn StoreBackend, name: &str) -> Vec<Vec<u8>> {
    let record = store.get(name).expect("get");
    store
        .read_blobs(&record, Verify::Hash)
        .expect("read_blobs")
        .into_iter()
        .map(BlobData::into_vec)
        .collect()
}

/// Names yielded by `records()`, unreadable ones marked with a `!`.
fn names(store: &dyn StoreBackend) -> Vec<String> {
    store
        .records()
        .expect("records")
        .map(|item| match item {
            Ok(record) => record.name,
            Err(bad) => format!("!{}", bad.name),
        })
        .collect()
}

/// 200 KiB that do not compress: big enough for a blob of its own.
fn large(seed: u8) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(seed);
    (0..200 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

pub(crate) fn batch_commit_returns_records_in_batch_order_and_lists_in_name_order(
    fixture: &mut dyn Fixture,
) {
    let store = fixture.fresh();
    let big = large(1);
    let batch = vec![
        pending(&*store, "charlie", &[("v", b"c")]),
        pending(&*store, "alpha", &[("v", b"a"), ("w", &big)]),
        pending(&*store, "bravo", &[("v", b"")]),
    ];
    let records = store.commit(batch).expect("commit");
    let order: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(order, ["charlie", "alpha", "bravo"]);
    assert!(records.iter().all(|r| r.created == records[0].created));
    assert_eq!(names(&*store), ["alpha", "bravo", "charlie"]);
    assert_eq!(load(&*store, "alpha"), vec![b"a".to_vec(), big.clone()]);
    assert_eq!(load(&*store, "bravo"), vec![Vec::<u8>::new()]);
    assert_eq!(load(&*store, "charlie"), vec![b"c".to_vec()]);
    let alpha = store.get("alpha").expect("get");
    assert_eq!(alpha, records[1]);
    assert_eq!(alpha.blobs[1].digest, blake3::hash(&big).to_hex().as_str());
    assert_eq!(alpha.blobs[1].size, big.len() as u64);
}

pub(crate) fn overwrite_replaces_the_record_and_a_repeated_name_keeps_the_later(
    fixture: &mut dyn Fixture,
) {
    let store = fixture.fresh();
    save(&*store, "x", &[("v", b"one")]);
    save(&*store, "x", &[("v", b"two")]);
    assert_eq!(load(&*store, "x"), vec![b"two".to_vec()]);
    let batch = vec![
        pending(&*store, "y", &[("v", b"first")]),
        pending(&*store, "y", &[("v", b"second")]),
    ];
    store.commit(batch).expect("commit");
    assert_eq!(load(&*store, "y"), vec![b"second".to_vec()]);
    assert_eq!(names(&*store), ["x", "y"]);
}

pub(crate) fn remove_returns_the_record_and_then_the_name_is_not_found(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    let saved = save(&*store, "gone", &[("v", b"bytes")]);
    save(&*store, "kept", &[("v", b"bytes")]);
    let removed = store.remove("gone").expect("remove");
    assert_eq!(removed, Listed::Record(saved));
    let err = store.get("gone").expect_err("removed");
    assert_eq!(err.to_string(), "no artifact named gone");
    let err = store.remove("gone").expect_err("removed twice");
    assert_eq!(err.to_string(), "no artifact named gone");
    assert_eq!(names(&*store), ["kept"]);
    assert_eq!(load(&*store, "kept"), vec![b"bytes".to_vec()]);
}

pub(crate) fn a_batch_with_one_bad_artifact_commits_nothing(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    let other = fixture.fresh();
    save(&*store, "a", &[("v", b"old")]);
    let big = large(2);
    let batch = vec![
        pending(&*store, "a", &[("v", b"new")]),
        pending(&*store, "b", &[("v", &big)]),
        pending(&*other, "c", &[("v", b"elsewhere")]),
    ];
    let err = store.commit(batch).expect_err("a foreign artifact");
    assert_eq!(
        err.to_string(),
        format!(
            "pending artifact c was written for store {}, not {}",
            other.location().display(),
            store.location().display()
        )
    );
    assert_eq!(names(&*store), ["a"]);
    assert_eq!(load(&*store, "a"), vec![b"old".to_vec()]);
    assert!(names(&*other).is_empty());
    assert!(store.commit(Vec::new()).expect("empty batch").is_empty());
}

pub(crate) fn identical_bytes_are_stored_once(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    let big = large(3);
    let first = save(&*store, "one", &[("small", b"same"), ("big", &big)]);
    let batch = vec![
        pending(&*store, "two", &[("small", b"same"), ("big", &big)]),
        pending(&*store, "three", &[("small", b"same")]),
    ];
    let later = store.commit(batch).expect("commit");
    for record in &later {
        for blob in &record.blobs {
            let original = first
                .blobs
                .iter()
                .find(|b| b.name == blob.name)
                .expect("same blob name");
            assert_eq!(blob.digest, original.digest);
            assert_eq!(blob.location, original.location, "{}", blob.name);
            assert_eq!(blob.storage, original.storage);
        }
    }
    store.remove("one").expect("remove");
    store.gc().expect("gc");
    assert_eq!(load(&*store, "two"), vec![b"same".to_vec(), big]);
}

pub(crate) fn hashed_reads_and_verify_refuse_a_corrupted_blob(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    let big = large(4);
    let record = save(&*store, "bad", &[("small", b"twelve bytes"), ("big", &big)]);
    save(&*store, "good", &[("v", b"fine")]);
    let clean = store.verify().expect("verify");
    assert!(clean.is_ok(), "{:?}", clean.issues);
    assert_eq!((clean.artifacts, clean.blobs), (2, 3));

    for blob in ["small", "big"] {
        fixture.corrupt_blob(&*store, &record, blob);
    }
    let err = store
        .read_blobs(&record, Verify::Hash)
        .expect_err("corrupt bytes are never served");
    let expected = blake3::hash(b"twelve bytes").to_hex().to_string();
    match &err {
        StoreError::Corrupt {
            name,
            blob,
            expected: want,
            ..
        } => assert_eq!(
            (name.as_str(), blob.as_str(), want),
            ("bad", "small", &expected)
        ),
        other => panic!("expected Corrupt, got {other}"),
    }
    let report = store.verify().expect("verify");
    let issues: Vec<(&str, Option<&str>)> = report
        .issues
        .iter()
        .map(|i| (i.artifact.as_str(), i.blob.as_deref()))
        .collect();
    assert_eq!(issues, [("bad", Some("small")), ("bad", Some("big"))]);
    assert!(report
        .issues
        .iter()
        .all(|i| matches!(i.error, StoreError::Corrupt { .. })));
    assert_eq!(load(&*store, "good"), vec![b"fine".to_vec()]);
}

pub(crate) fn a_read_only_store_reads_and_refuses_every_write(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    save(&*store, "a", &[("v", b"bytes")]);
    let pending_for_store = pending(&*store, "b", &[("v", b"more")]);
    let ro = fixture.read_only(&*store);
    assert!(ro.is_read_only());
    assert!(!store.is_read_only());
    let refusal = ro.check_writable().expect_err("read-only").to_string();
    assert_eq!(
        refusal,
        format!("store {} is read-only", ro.location().display())
    );
    let write_errors = [
        ro.writer("b").map(|_| ()).expect_err("writer"),
        ro.check_write("b").expect_err("check_write"),
        ro.commit(vec![pending_for_store])
            .map(|_| ())
            .expect_err("commit"),
        ro.remove("a").map(|_| ()).expect_err("remove"),
        ro.gc().map(|_| ()).expect_err("gc"),
    ];
    for err in write_errors {
        assert_eq!(err.to_string(), refusal);
    }
    assert_eq!(load(&*ro, "a"), vec![b"bytes".to_vec()]);
    assert_eq!(names(&*ro), ["a"]);
    assert!(ro.verify().expect("verify").is_ok());
    assert_eq!(names(&*store), ["a"]);
}

pub(crate) fn unreadable_records_are_listed_and_everything_else_reads(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    save(&*store, "alpha", &[("v", b"a")]);
    save(&*store, "zulu", &[("v", b"z")]);
    let reason = fixture.plant_unreadable(&*store, "mike");
    assert_eq!(names(&*store), ["alpha", "!mike", "zulu"]);
    let bad = store
        .records()
        .expect("records")
        .find_map(Result::err)
        .expect("one unreadable");
    assert_eq!(
        (bad.name.as_str(), bad.reason.as_str()),
        ("mike", reason.as_str())
    );
    let err = store.get("mike").expect_err("unreadable");
    assert_eq!(
        err.to_string(),
        format!("artifact mike is unreadable: {reason}")
    );
    assert_eq!(load(&*store, "alpha"), vec![b"a".to_vec()]);
    let report = store.verify().expect("verify");
    assert_eq!(report.issues.len(), 1);
    assert_eq!(report.issues[0].artifact, "mike");
    let err = store.gc().expect_err("gc refuses");
    assert_eq!(
        err.to_string(),
        "gc refused: 1 unreadable record(s), first: mike; they may use any blob — rm them or upgrade stowage"
    );
    let removed = store.remove("mike").expect("remove");
    assert!(matches!(removed, Listed::Unreadable(ref u) if u.reason == reason));
    assert_eq!(names(&*store), ["alpha", "zulu"]);
    store.gc().expect("gc after rm");
    assert_eq!(load(&*store, "zulu"), vec![b"z".to_vec()]);
}

pub(crate) fn names_and_blob_names_are_validated_on_write(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    for (name, reason) in [
        ("", "is empty"),
        ("a/b", "contains '/'"),
        (".hidden", "starts with '.'"),
        (" padded", "starts or ends with whitespace"),
    ] {
        let err = store.writer(name).map(|_| ()).expect_err("invalid name");
        assert_eq!(
            err.to_string(),
            format!("invalid artifact name {name:?}: {reason}")
        );
    }
    let mut writer = store.writer("ok").expect("writer");
    let err = writer
        .begin_blob("../escape", BlobLayout::Raw)
        .expect_err("invalid blob name");
    assert_eq!(
        err.to_string(),
        "invalid blob name \"../escape\" in artifact ok: contains a path separator"
    );
    assert!(names(&*store).is_empty());
}

pub(crate) fn gc_keeps_the_blobs_of_a_save_not_yet_committed(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    let big = large(5);
    save(&*store, "dead", &[("v", b"dead small"), ("w", &large(6))]);
    let waiting = pending(
        &*store,
        "waiting",
        &[("small", b"in flight"), ("big", &big)],
    );
    store.remove("dead").expect("remove");
    store.gc().expect("gc with a save in flight");
    store.commit(vec![waiting]).expect("commit after gc");
    assert_eq!(load(&*store, "waiting"), vec![b"in flight".to_vec(), big]);
    assert!(store.verify().expect("verify").is_ok());
}

pub(crate) fn threads_commit_concurrently_and_every_save_survives(fixture: &mut dyn Fixture) {
    let store = fixture.fresh();
    std::thread::scope(|scope| {
        for t in 0..4 {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                for i in 0..15 {
                    let bytes = format!("thread {t} save {i}");
                    save(&*store, &format!("t{t}-{i:02}"), &[("v", bytes.as_bytes())]);
                    save(&*store, "contended", &[("v", bytes.as_bytes())]);
                }
            });
        }
    });
    let listed = names(&*store);
    assert_eq!(listed.len(), 4 * 15 + 1);
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    assert_eq!(load(&*store, "t3-14"), vec![b"thread 3 save 14".to_vec()]);
    let report = store.verify().expect("verify");
    assert!(report.is_ok(), "{:?}", report.issues);
    assert_eq!(report.artifacts, 4 * 15 + 1);
}

pub(crate) fn many_reads_give_what_single_reads_give_in_order_and_name_the_failure(
    fixture: &mut dyn Fixture,
) {
    let store = fixture.fresh();
    let big = large(9);
    // Two batches (two packs on S3), a large blob, an empty blob, and a
    // small blob shared by digest.
    let first: Vec<PendingArtifact> = (0..40)
        .map(|i| {
            let bytes = format!("small value {i}");
            pending(&*store, &format!("n{i:02}"), &[("v", bytes.as_bytes())])
        })
        .collect();
    store.commit(first).expect("commit the first batch");
    let second = vec![
        pending(
            &*store,
            "big",
            &[("head", b"small value 3"), ("body", &big)],
        ),
        pending(&*store, "empty", &[("v", b"")]),
    ];
    store.commit(second).expect("commit the second batch");

    let wanted = ["n39", "big", "n00", "empty", "n07", "n00"];
    let records = store.get_many(&wanted).expect("get_many");
    let got_names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(got_names, wanted);
    for verify in [Verify::Hash, Verify::None] {
        let many: Vec<Vec<Vec<u8>>> = store
            .read_many(&records, verify)
            .expect("read_many")
            .into_iter()
            .map(|blobs| blobs.into_iter().map(BlobData::into_vec).collect())
            .collect();
        let single: Vec<Vec<Vec<u8>>> = wanted.iter().map(|name| load(&*store, name)).collect();
        assert_eq!(many, single);
    }
    assert_eq!(
        store.read_many(&records, Verify::Hash).expect("read_many")[1][1].len(),
        big.len()
    );

    match store.get_many(&["n01", "missing", "n02"]) {
        Err(StoreError::NotFound { name }) => assert_eq!(name, "missing"),
        other => panic!("expected NotFound for missing, got {other:?}"),
    }
    let bad = store.get("n05").expect("get n05");
    fixture.corrupt_blob(&*store, &bad, "v");
    let records = store.get_many(&["n04", "n05"]).expect("get_many");
    match store.read_many(&records, Verify::Hash) {
        Err(StoreError::Corrupt { name, blob, .. }) => {
            assert_eq!((name.as_str(), blob.as_str()), ("n05", "v"));
        }
        other => panic!("expected Corrupt for n05, got {other:?}"),
    }
}
