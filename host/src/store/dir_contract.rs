//! [`DirStore`] runs the store contract suite (`contract.rs`): its
//! [`Fixture`] makes scratch store directories and provides the test hooks
//! the seam does not have, written against the directory store's own
//! internals (the suite itself never sees them).

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use super::contract::Fixture;
use super::index;
use super::record::{BlobLocation, BlobRecord, Record, RECORD_FORMAT_VERSION};
use super::{DirStore, ReadOnlyWhy, StoreBackend, StoreError};

/// Scratch stores under the system temp dir, deleted on drop.
#[derive(Default)]
struct DirFixture {
    stores: Vec<(PathBuf, Arc<DirStore>)>,
}

impl DirFixture {
    /// The `DirStore` this fixture made at `store`'s location.
    fn find(&self, store: &dyn StoreBackend) -> &DirStore {
        self.stores
            .iter()
            .find(|(_, s)| s.dir() == store.location())
            .map(|(_, s)| &**s)
            .expect("a store this fixture made")
    }
}

impl Drop for DirFixture {
    fn drop(&mut self) {
        for (dir, _) in self.stores.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Fixture for DirFixture {
    fn fresh(&mut self) -> Arc<dyn StoreBackend> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("stowage-contract-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(DirStore::open(&dir).expect("open a fresh store"));
        self.stores.push((dir, Arc::clone(&store)));
        store
    }

    fn read_only(&mut self, store: &dyn StoreBackend) -> Arc<dyn StoreBackend> {
        Arc::new(
            DirStore::open_read_only(store.location(), ReadOnlyWhy::Denied)
                .expect("open read-only"),
        )
    }

    fn corrupt_blob(&mut self, store: &dyn StoreBackend, record: &Record, blob: &str) {
        let blob = record
            .blobs
            .iter()
            .find(|b| b.name == blob)
            .expect("a blob of the record");
        self.find(store).corrupt_for_test(blob).expect("corrupt");
    }

    fn plant_unreadable(&mut self, store: &dyn StoreBackend, name: &str) -> String {
        let newer = RECORD_FORMAT_VERSION + 1;
        self.find(store)
            .put_raw_record_for_test(serde_json::json!({
                "name": name, "obj_type": "t", "encoding": "e", "encoding_version": 1,
                "blobs": [], "written_by": {"serializer": "s", "version": "9"},
                "serializer_info": {}, "created": "2030-01-01T00:00:00Z",
                "format_version": newer
            }))
            .expect("plant a record");
        format!(
            "record format version {newer} is newer than this build reads \
             ({RECORD_FORMAT_VERSION}); upgrade stowage"
        )
    }
}

impl DirStore {
    /// Test hook: flips the first stored byte of `blob` in place (its own
    /// file, or its pack range).
    fn corrupt_for_test(&self, blob: &BlobRecord) -> std::io::Result<()> {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let offset = match blob.location {
            BlobLocation::Pack(loc) => loc.offset,
            BlobLocation::File | BlobLocation::FileZstd => 0,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.blob_path(blob))?;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(offset))?;
        file.read_exact(&mut byte)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&[byte[0] ^ 0xff])?;
        file.sync_all()
    }

    /// Test hook: appends a log entry putting `record` (raw JSON, which
    /// this build need not be able to read), under the lock: a format-2
    /// PUT item carrying the JSON as it is, as a newer build would write it.
    fn put_raw_record_for_test(&self, record: serde_json::Value) -> Result<(), StoreError> {
        let _locked = self.lock_for_write()?;
        let name = record["name"].as_str().unwrap_or_default().to_owned();
        let json = serde_json::to_vec(&record)
            .map_err(|e| StoreError::io(&self.log_path, std::io::Error::other(e)))?;
        let mut body = 0u16.to_le_bytes().to_vec();
        body.extend_from_slice(&json);
        let mut payload = Vec::new();
        super::snapshot::push_item(&mut payload, super::snapshot::PUT, name.as_bytes(), &body);
        let frame = index::encode_frame2(&payload).ok_or(StoreError::EntryTooLarge {
            bytes: payload.len(),
        })?;
        self.append_frame(&frame, false).map(|_| ())
    }
}

crate::contract_tests!(DirFixture::default());
