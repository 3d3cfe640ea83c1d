//! [`S3Store`] against a real S3 server (`s3s-fs`, `testserver.rs`): the
//! store contract suite (`contract.rs`) unchanged, then what only this
//! backend has: its key layout, mapped loads from the verified cache, gc
//! with a grace period and the reuse race it must survive.

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
            let key = layout::record_key(name, layout::new_ulid());
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
    // A hashed read goes to the store and reports the missing object.
    let err = reader
        .read_blobs(&record, Verify::Hash)
        .expect_err("hashed reads go to the store");
    assert_eq!(
        err.to_string(),
        format!(
            "blob v of artifact tensor is missing: {}/{} does not exist",
            reader.url(),
            layout::blob_key(&record.blobs[0].digest, false)
        )
    );
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
