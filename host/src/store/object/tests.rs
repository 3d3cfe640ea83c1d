//! [`S3Store`] against a real S3 server (`s3s-fs`, `testserver.rs`): the
//! store contract suite (`contract.rs`) unchanged, then what only this
//! backend has: its key layout, mapped loads from the verified cache, gc
//! with a grace period and the reuse race it must survive, the store
//! format marker, gc of batch markers, and the cache's bound (eviction of
//! the least recently used files).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::testserver::{S3Server, ACCESS_KEY, SECRET_KEY};
use super::{layout, S3Options, S3Store};
use crate::store::contract::Fixture;
use crate::store::record::{BlobLocation, Record, RECORD_FORMAT_VERSION};
use crate::store::{BlobLayout, RecordMeta, StoreBackend, Verify};

/// One server for this test binary (stopped when the process exits).
fn server() -> &'static S3Server {
    static SERVER: OnceLock<S3Server> = OnceLock::new();
    SERVER.get_or_init(S3Server::start)
}

fn scratch(what: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    super::testserver::target_dir()
        .join("s3-test")
        .join(format!("{what}-{}-{n}", std::process::id()))
}

fn options(cache: PathBuf) -> S3Options {
    S3Options {
        endpoint: Some(server().endpoint.clone()),
        region: Some("us-east-1".into()),
        allow_http: Some(true),
        cache: Some(cache),
        credentials: Some((ACCESS_KEY.into(), SECRET_KEY.into())),
        retries: Some((2, Duration::from_secs(10))),
        ..S3Options::default()
    }
}

/// A fresh prefix and cache per store.
struct S3Fixture {
    stores: Vec<(String, Arc<S3Store>)>,
    scratch: Vec<PathBuf>,
}

impl S3Fixture {
    fn new() -> S3Fixture {
        S3Fixture {
            stores: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn open(&mut self, url: &str, tweak: impl FnOnce(&mut S3Options)) -> Arc<S3Store> {
        let cache = scratch("cache");
        self.scratch.push(cache.clone());
        let mut opts = options(cache);
        tweak(&mut opts);
        let store = Arc::new(S3Store::open(url, &opts).expect("open an S3 store"));
        self.stores.push((url.to_owned(), Arc::clone(&store)));
        store
    }

    fn fresh_s3(&mut self) -> Arc<S3Store> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let url = server().url(&format!("t{}-{n}", std::process::id()));
        self.open(&url, |_| {})
    }

    fn find(&self, store: &dyn StoreBackend) -> Arc<S3Store> {
        self.stores
            .iter()
            .find(|(_, s)| s.location() == store.location())
            .map(|(_, s)| Arc::clone(s))
            .expect("a store this fixture made")
    }
}

impl Drop for S3Fixture {
    fn drop(&mut self) {
        for dir in &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Fixture for S3Fixture {
    fn fresh(&mut self) -> Arc<dyn StoreBackend> {
        self.fresh_s3()
    }

    fn read_only(&mut self, store: &dyn StoreBackend) -> Arc<dyn StoreBackend> {
        let url = self.find(store).url();
        self.open(&url, |o| o.read_only = true)
    }

    fn corrupt_blob(&mut self, store: &dyn StoreBackend, record: &Record, blob: &str) {
        let store = self.find(store);
        let blob = record
            .blobs
            .iter()
            .find(|b| b.name == blob)
            .expect("a blob of the record");
        let (key, offset) = match blob.location {
            BlobLocation::Pack(loc) => (layout::pack_key(loc.pack), loc.offset),
            BlobLocation::File => (layout::blob_key(&blob.digest, false), 0),
            BlobLocation::FileZstd => (layout::blob_key(&blob.digest, true), 0),
        };
        store.block_on(async {
            let bytes = store.get_bytes(&key).await.expect("get").expect("exists");
            let mut bytes = bytes.to_vec();
            let at = usize::try_from(offset).expect("offset");
            bytes[at] ^= 0xff;
            store.put(&key, bytes).await.expect("put");
        });
    }

    fn plant_unreadable(&mut self, store: &dyn StoreBackend, name: &str) -> String {
        let store = self.find(store);
        let newer = RECORD_FORMAT_VERSION + 1;
        let object = serde_json::json!({ "put": {
            "name": name, "obj_type": "t", "encoding": "e", "encoding_version": 1,
            "blobs": [], "written_by": {"serializer": "s", "version": "9"},
            "serializer_info": {}, "created": "2030-01-01T00:00:00Z",
            "format_version": newer
        }});
        store.block_on(async {
            let key = layout::record_key(name, layout::new_ulid(), None);
            store.put(&key, object.to_string()).await.expect("put");
        });
        format!(
            "record format version {newer} is newer than this build reads \
             ({RECORD_FORMAT_VERSION}); upgrade stowage"
        )
    }
}

crate::contract_tests!(S3Fixture::new());

// ---- this backend only ----

fn meta() -> RecordMeta {
    RecordMeta {
        obj_type: "bytes".into(),
        encoding: "msgpack".into(),
        encoding_version: 1,
        serializer: "s3-test".into(),
        serializer_version: "1.0.0".into(),
        serializer_info: Vec::new(),
        ..RecordMeta::default()
    }
}

fn save(store: &S3Store, name: &str, bytes: &[u8]) -> Record {
    let mut writer = store.writer(name).expect("writer");
    writer.begin_blob("v", BlobLayout::Raw).expect("begin");
    writer.write(bytes).expect("write");
    let pending = writer.finish(meta()).expect("finish");
    store.commit(vec![pending]).expect("commit").remove(0)
}

fn keys(store: &S3Store, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = store
        .block_on(store.list(prefix))
        .expect("list")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    keys.sort();
    keys
}

fn big(seed: u8, len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn records_are_immutable_objects_newest_first_and_rm_writes_a_tombstone() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    save(&store, "a name.v1", b"one");
    save(&store, "a name.v1", b"two");
    let history = keys(&store, &layout::record_prefix("a name.v1"));
    assert_eq!(history.len(), 2);
    assert!(
        history.iter().all(|k| k.starts_with(&format!(
            "records/{}/a=20name=2ev1/",
            layout::record_fan("a name.v1")
        ))),
        "{history:?}"
    );
    let newest = store.block_on(store.get_bytes(&history[0])).expect("get");
    let newest = String::from_utf8(newest.expect("exists").to_vec()).expect("utf-8");
    assert!(
        newest.starts_with("{\"put\":{\"name\":\"a name.v1\""),
        "{newest}"
    );
    store.remove("a name.v1").expect("rm");
    let history = keys(&store, &layout::record_prefix("a name.v1"));
    assert_eq!(history.len(), 3);
    let tomb = store.block_on(store.get_bytes(&history[0])).expect("get");
    assert_eq!(
        tomb.expect("exists").as_ref(),
        b"{\"remove\":\"a name.v1\"}"
    );
    let err = store.get("a name.v1").expect_err("removed");
    assert_eq!(err.to_string(), "no artifact named a name.v1");
}

#[test]
fn small_blobs_of_a_batch_go_up_as_one_pack_and_large_ones_by_digest() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    let large = big(1, 300 * 1024);
    let mut batch = Vec::new();
    for i in 0..50 {
        let mut writer = store.writer(&format!("small-{i:02}")).expect("writer");
        writer.begin_blob("v", BlobLayout::Raw).expect("begin");
        writer
            .write(format!("value {i}").as_bytes())
            .expect("write");
        batch.push(writer.finish(meta()).expect("finish"));
    }
    let mut writer = store.writer("large").expect("writer");
    writer.begin_blob("v", BlobLayout::Raw).expect("begin");
    writer.write(&large).expect("write");
    batch.push(writer.finish(meta()).expect("finish"));
    store.commit(batch).expect("commit");
    assert_eq!(keys(&store, layout::PACKS).len(), 1);
    let digest = blake3::hash(&large).to_hex().to_string();
    assert_eq!(
        keys(&store, layout::BLOBS),
        [layout::blob_key(&digest, false)]
    );
    assert_eq!(keys(&store, layout::BATCHES).len(), 1);
    assert_eq!(store.records().expect("records").count(), 51);
}

#[test]
fn a_mapped_load_maps_the_verified_cache_and_another_machine_downloads_once() {
    let mut fixture = S3Fixture::new();
    let writer_store = fixture.fresh_s3();
    let large = big(2, 512 * 1024);
    let record = save(&writer_store, "tensor", &large);
    // Another "machine": same URL, its own empty cache.
    let reader = fixture.open(&writer_store.url(), |_| {});
    let cached = reader.cache.path(&record.blobs[0].digest, false);
    assert!(!cached.exists());
    let first = reader
        .read_blobs(&record, Verify::None)
        .expect("mapped load");
    assert!(first[0].is_mapped());
    assert_eq!(&first[0][..], &large[..]);
    assert!(cached.is_file(), "downloaded into the cache");
    // The second mapped load needs no server: the object is gone and the
    // load still maps the verified cached copy.
    writer_store
        .block_on(writer_store.delete(&layout::blob_key(&record.blobs[0].digest, false)))
        .expect("delete the object");
    let second = reader
        .read_blobs(&record, Verify::None)
        .expect("mapped from cache");
    assert!(second[0].is_mapped());
    assert_eq!(&second[0][..], &large[..]);
    // A hashed read re-hashes the cached copy: no server needed either.
    let third = reader
        .read_blobs(&record, Verify::Hash)
        .expect("hashed read of the cached copy");
    assert_eq!(&third[0][..], &large[..]);
    // verify reads the store itself and reports the missing object.
    let report = reader.verify().expect("verify");
    let issues: Vec<String> = report.issues.iter().map(|i| i.error.to_string()).collect();
    assert_eq!(
        issues,
        [format!(
            "blob v of artifact tensor is missing: {}/{} does not exist",
            reader.url(),
            layout::blob_key(&record.blobs[0].digest, false)
        )]
    );
}

#[test]
fn a_hashed_read_drops_a_cached_copy_damaged_on_disk_and_downloads_it_again() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    // Several download ranges, the last one short.
    let large = big(7, 17 << 20 | 12345);
    let record = save(&store, "tensor", &large);
    let cached = store.cache.path(&record.blobs[0].digest, false);
    let mut damaged = std::fs::read(&cached).expect("the writer's cached copy");
    damaged[9 << 20] ^= 0x01;
    std::fs::remove_file(&cached).expect("unlink");
    std::fs::write(&cached, &damaged).expect("write the damaged copy");
    // A mapped read is unverified: it serves the damaged copy as it is.
    let mapped = store.read_blobs(&record, Verify::None).expect("mapped");
    assert_eq!(mapped[0][9 << 20], damaged[9 << 20]);
    drop(mapped);
    let hashed = store
        .read_blobs(&record, Verify::Hash)
        .expect("hashed read");
    assert_eq!(hashed[0].len(), large.len());
    assert!(
        hashed[0][..] == large[..],
        "the store's bytes, downloaded again"
    );
    assert_eq!(std::fs::read(&cached).expect("cached again"), large);
}

#[test]
fn gc_with_grace_zero_removes_superseded_records_and_unreferenced_objects() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    save(&store, "kept", &big(3, 100 * 1024));
    save(&store, "replaced", &big(4, 100 * 1024));
    let now = save(&store, "replaced", b"small now");
    save(&store, "dropped", b"dropped small");
    store.remove("dropped").expect("rm");
    // The default grace (1 hour) keeps everything this young.
    assert_eq!(store.gc().expect("gc"), crate::store::GcReport::default());
    assert_eq!(keys(&store, layout::BLOBS).len(), 2);
    let report = store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(report.blob_files_removed, 1);
    assert_eq!(report.packs_removed, 1, "the pack of 'dropped'");
    assert_eq!(keys(&store, layout::BLOBS).len(), 1);
    assert_eq!(keys(&store, layout::RECORDS).len(), 2);
    assert!(keys(&store, &layout::record_prefix("dropped")).is_empty());
    assert_eq!(store.get("replaced").expect("get"), now);
    assert!(store.verify().expect("verify").is_ok());
}

#[test]
fn a_save_reusing_an_old_unreferenced_blob_refreshes_it_so_a_concurrent_gc_keeps_it() {
    // The race a grace period alone does not cover: "old" is an
    // unreferenced blob past the grace period; a save on machine B finds
    // it by digest and reuses it while gc on machine A has already
    // listed it as garbage.
    let mut fixture = S3Fixture::new();
    let a = fixture.fresh_s3();
    let grace = Duration::from_secs(2);
    let b = fixture.open(&a.url(), |o| o.gc_grace = Some(grace));
    let bytes = big(5, 200 * 1024);
    save(&a, "first", &bytes);
    a.remove("first").expect("rm");
    let key = layout::blob_key(blake3::hash(&bytes).to_hex().as_str(), false);
    // Let the blob age past the grace period (the server's clock decides;
    // HEAD answers in whole seconds, so one more second of margin).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let meta = a.block_on(a.head(&key)).expect("head").expect("exists");
        if a.is_old(&meta, grace + Duration::from_secs(1)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the blob never aged");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A's gc marks (the blob is garbage: no record names it), then B's
    // save reuses it — and refreshes it, since it is older than half the
    // grace period — and writes its record, then A's gc sweeps.
    let plan = a.block_on(a.gc_mark(grace)).expect("gc mark");
    let record = save(&b, "second", &bytes);
    let report = a.block_on(a.gc_sweep(plan)).expect("gc sweep");
    assert_eq!(report.blob_files_removed, 0, "the refreshed blob is young");
    assert_eq!(
        b.read_blobs(&record, Verify::Hash).expect("load")[0][..],
        bytes[..]
    );
    assert!(b.verify().expect("verify").is_ok());
}

// ---- the store format marker ----

fn marker(store: &S3Store) -> Option<String> {
    store
        .block_on(store.get_bytes(layout::FORMAT))
        .expect("get the marker")
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn plant_marker(store: &S3Store, text: &str) {
    store
        .block_on(store.put(layout::FORMAT, text.to_owned()))
        .expect("put the marker");
}

#[test]
fn a_new_store_gets_its_format_marker_at_the_first_save_and_not_at_reads() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    assert_eq!(store.records().expect("ls").count(), 0);
    let err = store.get("nothing").expect_err("empty");
    assert_eq!(err.to_string(), "no artifact named nothing");
    assert_eq!(marker(&store), None, "reads never write the marker");
    let record = save(&store, "first", &big(10, 100 * 1024));
    assert_eq!(marker(&store).as_deref(), Some("stowage-s3-store 1\n"));
    // Another instance reads the marked store normally.
    let other = fixture.open(&store.url(), |_| {});
    assert_eq!(other.get("first").expect("get"), record);
    // A read-only instance of an unmarked store does not write it.
    let unmarked = fixture.fresh_s3();
    let read_only = fixture.open(&unmarked.url(), |o| o.read_only = true);
    assert_eq!(
        read_only.get("x").expect_err("empty").to_string(),
        "no artifact named x"
    );
    let err = read_only.remove("x").expect_err("read-only");
    assert_eq!(
        err.to_string(),
        format!("store {} is read-only", unmarked.url())
    );
    assert_eq!(marker(&unmarked), None);
}

#[test]
fn a_store_of_a_newer_format_refuses_ls_get_save_rm_and_gc_naming_both_versions() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    let record = save(&store, "kept", &big(11, 100 * 1024));
    plant_marker(&store, "stowage-s3-store 99\n");
    let newer = fixture.open(&store.url(), |_| {});
    let expected = format!(
        "store {} has format 99; this build writes format 1 — upgrade stowage",
        store.url()
    );
    let err = newer.records().err().expect("ls refused");
    assert_eq!(err.to_string(), expected);
    assert_eq!(
        newer.get("kept").expect_err("get refused").to_string(),
        expected
    );
    assert_eq!(
        newer
            .read_blobs(&record, Verify::Hash)
            .expect_err("load refused")
            .to_string(),
        expected
    );
    let mut writer = newer.writer("new").expect("writer");
    writer.begin_blob("v", BlobLayout::Raw).expect("begin");
    writer.write(b"bytes").expect("write");
    let pending = writer.finish(meta()).expect("finish");
    assert_eq!(
        newer
            .commit(vec![pending])
            .expect_err("save refused")
            .to_string(),
        expected
    );
    assert_eq!(
        newer.remove("kept").expect_err("rm refused").to_string(),
        expected
    );
    assert_eq!(
        newer
            .gc_with_grace(Duration::ZERO)
            .expect_err("gc refused")
            .to_string(),
        expected
    );
    assert_eq!(
        newer.verify().expect_err("verify refused").to_string(),
        expected
    );
    // Nothing was written: the marker and the one record are as they were.
    assert_eq!(marker(&store).as_deref(), Some("stowage-s3-store 99\n"));
    assert_eq!(keys(&store, layout::RECORDS).len(), 1);
}

#[test]
fn a_malformed_format_marker_is_its_own_error_naming_the_marker_url() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    save(&store, "kept", b"small");
    for (text, reason) in [
        ("stowage-store 2\n", "expected \"stowage-s3-store N\""),
        (
            "stowage-s3-store 0\n",
            "expected \"stowage-s3-store N\" with N ≥ 1",
        ),
        (
            "stowage-s3-store two\n",
            "expected \"stowage-s3-store N\" with N ≥ 1",
        ),
    ] {
        plant_marker(&store, text);
        let bad = fixture.open(&store.url(), |_| {});
        let expected = format!(
            "store format marker {}/format is malformed: {reason}",
            store.url()
        );
        let err = bad.get("kept").expect_err("get refused");
        assert_eq!(err.to_string(), expected, "{text:?}");
        let err = bad.records().err().expect("ls refused");
        assert_eq!(err.to_string(), expected, "{text:?}");
        assert_eq!(marker(&store).as_deref(), Some(text), "left as it was");
    }
}

#[test]
fn a_store_written_before_markers_reads_and_gains_the_marker_at_its_next_write() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    let old = save(&store, "old", &big(12, 100 * 1024));
    // What a build before markers left: the same layout, no marker.
    store
        .block_on(store.delete(layout::FORMAT))
        .expect("delete the marker");
    let later = fixture.open(&store.url(), |_| {});
    assert_eq!(later.get("old").expect("get"), old);
    assert_eq!(later.records().expect("ls").count(), 1);
    assert_eq!(
        later.read_blobs(&old, Verify::Hash).expect("load")[0][..],
        big(12, 100 * 1024)[..]
    );
    assert_eq!(marker(&store), None, "reads leave it unmarked");
    save(&later, "new", b"new bytes");
    assert_eq!(marker(&store).as_deref(), Some("stowage-s3-store 1\n"));
    assert_eq!(later.records().expect("ls").count(), 2);
}

#[test]
fn the_format_marker_is_read_once_per_instance() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    save(&store, "a", b"one");
    let reader = fixture.open(&store.url(), |_| {});
    reader.get("a").expect("first read checks the marker");
    // A marker changed afterwards is not read again by this instance (a
    // later instance sees it).
    plant_marker(&store, "stowage-s3-store 99\n");
    reader.get("a").expect("no second marker request");
    assert_eq!(reader.records().expect("ls").count(), 1);
    let later = fixture.open(&store.url(), |_| {});
    assert_eq!(
        later.get("a").expect_err("refused").to_string(),
        format!(
            "store {} has format 99; this build writes format 1 — upgrade stowage",
            store.url()
        )
    );
    // And a refusal is kept too: putting a good marker back does not
    // reopen a refused instance.
    plant_marker(&store, "stowage-s3-store 1\n");
    assert!(later
        .get("a")
        .is_err_and(|e| e.to_string().contains("format 99")));
}

// ---- batch markers ----

fn save_many(store: &S3Store, items: &[(&str, &[u8])]) -> Vec<Record> {
    let mut batch = Vec::new();
    for (name, bytes) in items {
        let mut writer = store.writer(name).expect("writer");
        writer.begin_blob("v", BlobLayout::Raw).expect("begin");
        writer.write(bytes).expect("write");
        batch.push(writer.finish(meta()).expect("finish"));
    }
    store.commit(batch).expect("commit")
}

#[test]
fn gc_deletes_a_batch_marker_once_every_record_of_its_batch_is_superseded() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    save_many(
        &store,
        &[("a", b"batch a"), ("b", b"batch b"), ("c", b"batch c")],
    );
    assert_eq!(keys(&store, layout::BATCHES).len(), 1);
    let singles: Vec<Record> = ["a", "b", "c"]
        .iter()
        .map(|name| save(&store, name, format!("single {name}").as_bytes()))
        .collect();
    store.gc_with_grace(Duration::ZERO).expect("gc");
    assert!(
        keys(&store, layout::BATCHES).is_empty(),
        "the marker is gone"
    );
    assert_eq!(keys(&store, layout::RECORDS).len(), 3);
    // Another instance (no batch it knew of) loads the three live records.
    let reader = fixture.open(&store.url(), |_| {});
    for (name, single) in ["a", "b", "c"].iter().zip(&singles) {
        let record = reader.get(name).expect("get");
        assert_eq!(&record, single);
        let data = reader.read_blobs(&record, Verify::Hash).expect("load");
        assert_eq!(&data[0][..], format!("single {name}").as_bytes());
    }
    assert!(reader.verify().expect("verify").is_ok());
}

#[test]
fn gc_keeps_a_batch_marker_while_any_record_of_its_batch_is_live() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    let batch = save_many(
        &store,
        &[("a", b"batch a"), ("b", b"batch b"), ("c", b"batch c")],
    );
    store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(keys(&store, layout::BATCHES).len(), 1, "all three live");
    // Two of three superseded: "c" still needs the marker.
    save(&store, "a", b"single a");
    save(&store, "b", b"single b");
    store.gc_with_grace(Duration::ZERO).expect("gc");
    assert_eq!(keys(&store, layout::BATCHES).len(), 1, "c is live");
    let reader = fixture.open(&store.url(), |_| {});
    assert_eq!(reader.get("c").expect("c from the batch"), batch[2]);
    assert_eq!(
        &reader.read_blobs(&batch[2], Verify::Hash).expect("load")[0][..],
        b"batch c"
    );
    // A removed name's tombstone supersedes the batch record too.
    store.remove("c").expect("rm");
    store.gc_with_grace(Duration::ZERO).expect("gc");
    assert!(keys(&store, layout::BATCHES).is_empty());
    assert_eq!(keys(&store, layout::RECORDS).len(), 2);
    // The default grace (1 hour) keeps a young unreferenced marker.
    save_many(&store, &[("d", b"d"), ("e", b"e")]);
    save(&store, "d", b"d2");
    save(&store, "e", b"e2");
    store.gc().expect("gc");
    assert_eq!(
        keys(&store, layout::BATCHES).len(),
        1,
        "younger than the grace"
    );
}

// ---- the cache bound ----

/// Sets `path`'s modification time to `ago` before now: what it would be
/// had it last been used then.
fn age(path: &std::path::Path, ago: Duration) {
    let when = std::time::SystemTime::now() - ago;
    std::fs::File::open(path)
        .and_then(|f| f.set_modified(when))
        .expect("set the modification time");
}

#[test]
fn the_cache_evicts_the_least_recently_used_blobs_beyond_its_bound_and_loads_download_again() {
    let mut fixture = S3Fixture::new();
    let url = fixture.fresh_s3().url();
    // 1 MiB: three 300 KiB blobs fit, four do not.
    let store = fixture.open(&url, |o| o.cache_max_mb = Some(1));
    let hour = Duration::from_secs(3600);
    let names = ["a", "b", "c", "d"];
    let bytes: Vec<Vec<u8>> = (0..4u8).map(|i| big(20 + i, 300 * 1024)).collect();
    let mut records = Vec::new();
    for (name, data) in names.iter().zip(&bytes).take(3) {
        records.push(save(&store, name, data));
    }
    let cached: Vec<PathBuf> = records
        .iter()
        .map(|r| store.cache.path(&r.blobs[0].digest, false))
        .collect();
    assert!(
        cached.iter().all(|p| p.is_file()),
        "the saves warmed the cache"
    );
    // As if used 3, 2 and 1 hours ago; then a mapped load of "a" uses it now.
    for (path, hours) in cached.iter().zip([3, 2, 1]) {
        age(path, hour * hours);
    }
    let a = store
        .read_blobs(&records[0], Verify::None)
        .expect("mapped load of a");
    assert!(a[0].is_mapped());
    // "b" is mapped too, and then left unused for two hours (the mapping
    // stays; what matters is the file's last use).
    let b_mapped = store
        .read_blobs(&records[1], Verify::None)
        .expect("mapped load of b");
    age(&cached[1], hour * 2);
    // The fourth save passes the bound: the least recently used file goes.
    records.push(save(&store, names[3], &bytes[3]));
    let cached_d = store.cache.path(&records[3].blobs[0].digest, false);
    assert!(
        !cached[1].exists(),
        "b, the least recently used, was evicted"
    );
    assert!(cached[0].is_file() && cached[2].is_file() && cached_d.is_file());
    // The mapping of the evicted file still reads its bytes.
    assert_eq!(&b_mapped[0][..], &bytes[1][..]);
    // A mapped load of "b" downloads and verifies it again.
    let b = store
        .read_blobs(&records[1], Verify::None)
        .expect("mapped load of b after eviction");
    assert!(b[0].is_mapped());
    assert_eq!(&b[0][..], &bytes[1][..]);
    assert!(cached[1].is_file(), "back in the cache");
    // That download grew the cache past its bound again: "c" (an hour)
    // was the least recently used.
    assert!(!cached[2].exists(), "c was evicted");
    assert!(cached[0].is_file() && cached_d.is_file());

    // Files used within the last 10 minutes are kept even beyond the bound
    // (a save in flight uploads from the cache): "c" downloaded again
    // makes four recent files, 1200 KiB.
    let c = store
        .read_blobs(&records[2], Verify::None)
        .expect("mapped load of c");
    assert_eq!(&c[0][..], &bytes[2][..]);
    assert!(cached.iter().chain([&cached_d]).all(|p| p.is_file()));
    // gc trims too: once they are older, the least recently used goes.
    for (path, hours) in [&cached[2], &cached_d, &cached[0], &cached[1]]
        .into_iter()
        .zip([5, 4, 3, 2])
    {
        age(path, hour * hours);
    }
    let tmp = store.cache.tmp_dir();
    let stale = tmp.join("stale-writer.tmp");
    let young = tmp.join("busy-writer.tmp");
    std::fs::write(&stale, b"left by a crash").expect("write");
    std::fs::write(&young, b"being written").expect("write");
    age(&stale, hour * 25);
    age(&young, hour * 2);
    assert_eq!(store.gc().expect("gc"), crate::store::GcReport::default());
    assert!(
        !cached[2].exists(),
        "c, the least recently used, was evicted"
    );
    assert!(cached[0].is_file() && cached[1].is_file() && cached_d.is_file());
    assert_eq!(
        std::fs::read_to_string(store.cache.dir().join("grown")).expect("counter"),
        "0",
        "the last growth started a trim"
    );
    assert!(
        !stale.exists(),
        "a temp file untouched for a day is deleted"
    );
    assert!(young.exists(), "a younger temp file is kept");
    // Everything still loads, mapped or hashed.
    for (record, data) in records.iter().zip(&bytes) {
        assert_eq!(
            &store.read_blobs(record, Verify::None).expect("mapped")[0][..],
            &data[..]
        );
        assert_eq!(
            &store.read_blobs(record, Verify::Hash).expect("hashed")[0][..],
            &data[..]
        );
    }
}

#[test]
fn a_trim_never_evicts_files_used_in_the_last_ten_minutes() {
    let mut fixture = S3Fixture::new();
    let url = fixture.fresh_s3().url();
    let store = fixture.open(&url, |o| o.cache_max_mb = Some(0));
    let records: Vec<Record> = (0..3u8)
        .map(|i| save(&store, &format!("n{i}"), &big(30 + i, 200 * 1024)))
        .collect();
    let cached: Vec<PathBuf> = records
        .iter()
        .map(|r| store.cache.path(&r.blobs[0].digest, false))
        .collect();
    // A bound of 0 trims at every download or save, yet nothing recent goes.
    assert!(cached.iter().all(|p| p.is_file()));
    let trimmed = store.cache.trim().expect("trim");
    assert_eq!(trimmed.evicted, 0);
    assert_eq!(trimmed.left, 3 * 200 * 1024);
    age(&cached[0], Duration::from_secs(11 * 60));
    let trimmed = store.cache.trim().expect("trim");
    assert_eq!((trimmed.evicted, trimmed.bytes), (1, 200 * 1024));
    assert!(!cached[0].exists() && cached[1].is_file() && cached[2].is_file());
}

#[test]
fn get_many_reads_the_records_of_a_batch_from_its_bundle_and_skips_an_uncommitted_batch() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    let firsts: Vec<Record> = ["a", "b"]
        .iter()
        .map(|name| save(&store, name, format!("first {name}").as_bytes()))
        .collect();
    let batch = save_many(&store, &[("a", b"batch a"), ("b", b"batch b"), ("c", b"c")]);
    let bundles = keys(&store, layout::BATCHES);
    assert_eq!(bundles.len(), 1);
    let bytes = store
        .block_on(store.get_bytes(&bundles[0]))
        .expect("get")
        .expect("the bundle exists");
    assert_eq!(
        layout::bundle_records(&bytes).map(|records| records.len()),
        Some(3)
    );

    // The batch's record objects carry its id in their keys; a reader
    // that resolves two or more of them takes their records from the
    // bundle, so damaging `a`'s own object (outside damage) does not
    // reach get_many, while a single get reads that object.
    let a_key = keys(&store, &layout::record_prefix("a")).remove(0);
    assert!(layout::record_key_batch(&a_key).is_some(), "{a_key}");
    store
        .block_on(store.put(&a_key, b"not json".to_vec()))
        .expect("put");
    let reader = fixture.open(&store.url(), |_| {});
    assert_eq!(reader.get_many(&["a", "b", "c"]).expect("get_many"), batch);
    match reader.get("a") {
        Err(crate::store::StoreError::Unreadable { name, reason }) => {
            assert_eq!(name, "a");
            assert!(reason.starts_with("not JSON"), "{reason}");
        }
        other => panic!("expected the damaged object to be unreadable, got {other:?}"),
    }

    // Without its bundle the batch never committed: every reader falls
    // back to each name's previous record (c had none).
    store
        .block_on(store.delete(&bundles[0]))
        .expect("delete the bundle");
    let reader = fixture.open(&store.url(), |_| {});
    assert_eq!(reader.get_many(&["a", "b"]).expect("get_many"), firsts);
    match reader.get_many(&["b", "c"]) {
        Err(crate::store::StoreError::NotFound { name }) => assert_eq!(name, "c"),
        other => panic!("expected c not found, got {other:?}"),
    }
}

#[test]
fn get_many_of_many_names_lists_the_store_once_or_each_name_and_agrees_with_get() {
    let mut fixture = S3Fixture::new();
    let store = fixture.fresh_s3();
    // 1,100 record keys: more than the one listing page a lookup of 129
    // names may spend, fewer than the 8 pages 1,024 names may.
    let values: Vec<(String, Vec<u8>)> = (0..1100)
        .map(|i| (format!("item-{i:04}"), format!("value {i}").into_bytes()))
        .collect();
    let items: Vec<(&str, &[u8])> = values
        .iter()
        .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
        .collect();
    save_many(&store, &items);
    save(&store, "item-0007", b"overwritten");
    let reader = fixture.open(&store.url(), |_| {});
    for count in [129, 1024] {
        let names: Vec<&str> = items.iter().rev().take(count).map(|(n, _)| *n).collect();
        let records = reader.get_many(&names).expect("get_many");
        let got: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(got, names);
        let data = reader.read_many(&records, Verify::Hash).expect("read_many");
        for (i, ((name, blobs), record)) in names.iter().zip(&data).zip(&records).enumerate() {
            // A single get is a round of requests (tens of ms on s3s-fs):
            // compare a sample, and the overwritten name.
            if i % 100 == 0 || *name == "item-0007" {
                assert_eq!(record, &reader.get(name).expect("get"));
            }
            let expected: &[u8] = if *name == "item-0007" {
                b"overwritten"
            } else {
                items
                    .iter()
                    .find(|(n, _)| n == name)
                    .map_or(&[][..], |(_, b)| *b)
            };
            assert_eq!(&blobs[0][..], expected, "{name}");
        }
    }
    let mut names: Vec<&str> = items.iter().take(200).map(|(n, _)| *n).collect();
    names.insert(150, "absent");
    match reader.get_many(&names) {
        Err(crate::store::StoreError::NotFound { name }) => assert_eq!(name, "absent"),
        other => panic!("expected absent not found, got {other:?}"),
    }
}
