//! In-process test support for plugin authors.
//!
//! [`PluginTest`] drives a plugin through the same ABI structs the host
//! builds — value nodes, a sink, metadata and blob views — without building
//! a `cdylib` or loading anything, so a plugin crate's unit tests exercise
//! the real conversions. Loading through `dlopen` belongs in integration
//! tests. [`count_releases`] wraps an Arrow batch so a test can prove each
//! `release` ran exactly once, in process or through the host.
//!
//! Decision: always compiled rather than behind a feature. A feature enabled
//! only through dev-dependencies splits plugin-api into two builds in a
//! workspace test run, and a doctest then sees two `Plugin` traits. The
//! module is small and the linker drops it from plugins that do not use it.
//!
//! ```
//! # use stowage_plugin_api::*;
//! # #[derive(Default)] struct Raw;
//! # impl Plugin for Raw {
//! #     fn declaration(&self) -> Declaration { Declaration::new("raw").kinds([Kind::Bytes]).encoding("raw") }
//! #     fn serialize(&self, v: &ValueRef<'_>, _: &Options<'_>, s: &mut Sink<'_>) -> Result<Metadata, PluginError> {
//! #         let ValueRef::Bytes(b) = v else { return Err(PluginError::unsupported("bytes only")) };
//! #         s.blob("data", b)?; Ok(Metadata::new("bytes", "raw", 1))
//! #     }
//! #     fn deserialize<'a>(&self, _: &MetadataRef<'a>, b: &Blobs<'a>) -> Result<Value<'a>, PluginError> {
//! #         Ok(Value::Bytes(b.get("data").unwrap_or_default().into()))
//! #     }
//! # }
//! use stowage_plugin_api::testing::PluginTest;
//!
//! let test = PluginTest::new(Raw);
//! let stored = test.serialize(&mut Value::Bytes(b"hi"[..].into()), &[]).unwrap();
//! assert_eq!(stored.blobs, vec![("data".to_owned(), b"hi".to_vec())]);
//! let back = test.deserialize(&stored.metadata, &stored.blobs).unwrap();
//! assert!(matches!(back, Value::Bytes(b) if &b[..] == b"hi"));
//! ```

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use abi_stable::std_types::{RResult, RSlice, RStr};

use crate::abi::{AbiBlob, AbiError, AbiErrorKind, AbiMetadataRef, AbiSink, AbiStrPair};
use crate::arrow::{ArrowArray, ArrowBatch, ArrowSchema};
use crate::plugin::{Blobs, Metadata, MetadataRef, Options, Plugin, PluginError, Sink};
use crate::value::{AbiTree, Value, ValueRef};

/// What `serialize`/`ingest` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The returned metadata.
    pub metadata: Metadata,
    /// The blobs written, in order.
    pub blobs: Vec<(String, Vec<u8>)>,
}

/// Drives one plugin in-process through the ABI structs.
pub struct PluginTest<P: Plugin> {
    plugin: P,
}

unsafe extern "C" fn begin_blob(ctx: *mut c_void, name: RStr<'_>) -> RResult<(), AbiError> {
    // SAFETY: `ctx` is the `Vec` lent by `with_sink` for this call.
    let blobs = unsafe { &mut *(ctx as *mut Vec<(String, Vec<u8>)>) };
    blobs.push((name.to_string(), Vec::new()));
    RResult::ROk(())
}

unsafe extern "C" fn write(ctx: *mut c_void, bytes: RSlice<'_, u8>) -> RResult<(), AbiError> {
    // SAFETY: as in `begin_blob`.
    let blobs = unsafe { &mut *(ctx as *mut Vec<(String, Vec<u8>)>) };
    match blobs.last_mut() {
        Some((_, data)) => {
            data.extend_from_slice(&bytes);
            RResult::ROk(())
        }
        None => RResult::RErr(AbiError {
            kind: AbiErrorKind::INTERNAL,
            message: "write before begin_blob".into(),
        }),
    }
}

fn with_sink<R>(call: impl FnOnce(&mut Sink<'_>) -> R) -> (R, Vec<(String, Vec<u8>)>) {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut abi = AbiSink {
        ctx: &mut blobs as *mut Vec<(String, Vec<u8>)> as *mut c_void,
        begin_blob,
        write,
    };
    let result = call(&mut Sink(&mut abi));
    (result, blobs)
}

fn pairs<'a>(items: &'a [(&'a str, &'a str)]) -> Vec<AbiStrPair<'a>> {
    items
        .iter()
        .map(|(key, value)| AbiStrPair {
            key: RStr::from_str(key),
            value: RStr::from_str(value),
        })
        .collect()
}

impl<P: Plugin> PluginTest<P> {
    /// Wraps a plugin.
    pub fn new(plugin: P) -> Self {
        PluginTest { plugin }
    }

    /// The plugin.
    pub fn plugin(&self) -> &P {
        &self.plugin
    }

    /// `can_serialize` then `serialize`, with `options`.
    pub fn serialize(
        &self,
        value: &mut Value<'_>,
        options: &[(&str, &str)],
    ) -> Result<Stored, PluginError> {
        let mut tree = AbiTree::new();
        let root = value.to_abi(&mut tree);
        tree.set_root(root);
        let view = ValueRef::from_abi(tree.root());
        if !self.plugin.can_serialize(&view) {
            return Err(PluginError::unsupported("can_serialize declined the value"));
        }
        let options = pairs(options);
        let (metadata, blobs) = with_sink(|sink| {
            self.plugin
                .serialize(&view, &Options(RSlice::from_slice(&options)), sink)
        });
        Ok(Stored {
            metadata: metadata?,
            blobs,
        })
    }

    /// `ingest` of a whole file, with `options`.
    pub fn ingest(&self, file: &[u8], options: &[(&str, &str)]) -> Result<Stored, PluginError> {
        let options = pairs(options);
        let (metadata, blobs) = with_sink(|sink| {
            self.plugin
                .ingest(file, &Options(RSlice::from_slice(&options)), sink)
        });
        Ok(Stored {
            metadata: metadata?,
            blobs,
        })
    }

    /// `can_deserialize` then `deserialize` of what `serialize` stored. The
    /// value is returned owned (borrowed payloads copied) so it can outlive
    /// the views this helper builds.
    ///
    /// Arrow batches are not copied: a plugin that loads zero-copy (as the
    /// host allows) returns batches whose buffers point into `blobs`, so keep
    /// `blobs` alive and unchanged until the batches are released, as the
    /// host does.
    pub fn deserialize(
        &self,
        metadata: &Metadata,
        blobs: &[(String, Vec<u8>)],
    ) -> Result<Value<'static>, PluginError> {
        self.with_artifact(metadata, blobs, |meta, blobs| {
            if !self.plugin.can_deserialize(meta) {
                return Err(PluginError::unsupported(
                    "can_deserialize declined the artifact",
                ));
            }
            Ok(self.plugin.deserialize(meta, blobs)?.into_owned())
        })
    }

    /// `export` of what `serialize` stored: the standard file's bytes.
    pub fn export(
        &self,
        metadata: &Metadata,
        blobs: &[(String, Vec<u8>)],
    ) -> Result<Vec<u8>, PluginError> {
        self.with_artifact(metadata, blobs, |meta, blobs| {
            let (result, files) = with_sink(|out| self.plugin.export(meta, blobs, out));
            result?;
            Ok(files.into_iter().flat_map(|(_, data)| data).collect())
        })
    }

    /// `describe` of what `serialize` stored.
    pub fn describe(
        &self,
        metadata: &Metadata,
        blobs: &[(String, Vec<u8>)],
    ) -> Result<String, PluginError> {
        self.with_artifact(metadata, blobs, |meta, blobs| {
            self.plugin.describe(meta, blobs)
        })
    }

    fn with_artifact<R>(
        &self,
        metadata: &Metadata,
        blobs: &[(String, Vec<u8>)],
        call: impl FnOnce(&MetadataRef<'_>, &Blobs<'_>) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        let info: Vec<AbiStrPair<'_>> = metadata
            .info
            .iter()
            .map(|(k, v)| AbiStrPair {
                key: RStr::from_str(k),
                value: RStr::from_str(v),
            })
            .collect();
        let names: Vec<RStr<'_>> = blobs.iter().map(|(n, _)| RStr::from_str(n)).collect();
        let sizes: Vec<u64> = blobs.iter().map(|(_, d)| d.len() as u64).collect();
        let abi_meta = AbiMetadataRef {
            obj_type: RStr::from_str(&metadata.obj_type),
            encoding: RStr::from_str(&metadata.encoding),
            encoding_version: metadata.encoding_version,
            info: RSlice::from_slice(&info),
            blob_names: RSlice::from_slice(&names),
            blob_sizes: RSlice::from_slice(&sizes),
        };
        let abi_blobs: Vec<AbiBlob<'_>> = blobs
            .iter()
            .map(|(name, data)| AbiBlob {
                name: RStr::from_str(name),
                data: RSlice::from_slice(data),
            })
            .collect();
        call(
            &MetadataRef(&abi_meta),
            &Blobs(RSlice::from_slice(&abi_blobs)),
        )
    }
}

/// How often the root schema and array of one batch wrapped by
/// [`count_releases`] were released.
#[derive(Debug, Default)]
pub struct ReleaseCounts {
    schema: AtomicUsize,
    array: AtomicUsize,
}

impl ReleaseCounts {
    /// `(schema releases, array releases)`; `(1, 1)` once a batch is done.
    pub fn get(&self) -> (usize, usize) {
        (
            self.schema.load(Ordering::SeqCst),
            self.array.load(Ordering::SeqCst),
        )
    }
}

/// Wraps `batch` so that each `release` of its root schema and array is
/// counted before the wrapped struct is released: hand the result to a
/// plugin (or the host) and check [`ReleaseCounts::get`] to prove every
/// release ran exactly once.
///
/// The wrapper's structs alias the wrapped ones' fields (children, buffers,
/// strings), as any consumer sees them. Children and dictionaries are
/// released by their root's `release` (the C Data Interface's rule), so
/// only roots are counted.
pub fn count_releases(batch: ArrowBatch) -> (ArrowBatch, Arc<ReleaseCounts>) {
    let counts = Arc::new(ReleaseCounts::default());
    let (schema, array) = batch.into_raw();
    // The aliases copy pointers to children and buffers, which stay where
    // they are when the structs themselves move into their boxes.
    let (schema_alias, array_alias) = (alias_schema(&schema), alias_array(&array));
    let outer_schema = ArrowSchema {
        release: Some(release_counted_schema),
        private_data: Box::into_raw(Box::new(Counted {
            inner: schema,
            counts: Arc::clone(&counts),
        }))
        .cast(),
        ..schema_alias
    };
    let outer_array = ArrowArray {
        release: Some(release_counted_array),
        private_data: Box::into_raw(Box::new(Counted {
            inner: array,
            counts: Arc::clone(&counts),
        }))
        .cast(),
        ..array_alias
    };
    // SAFETY: the outer structs are valid C Data structs: their fields point
    // at the inner structs' live children and buffers, which the boxes in
    // `private_data` keep until the outer `release` frees them, once.
    let batch = unsafe { ArrowBatch::from_raw(outer_schema, outer_array) };
    (batch, counts)
}

/// The private data of a counted struct: the wrapped struct and the counts.
struct Counted<T> {
    inner: T,
    counts: Arc<ReleaseCounts>,
}

/// A copy of `schema`'s fields with no ownership (`release` unset).
fn alias_schema(schema: &ArrowSchema) -> ArrowSchema {
    ArrowSchema {
        format: schema.format,
        name: schema.name,
        metadata: schema.metadata,
        flags: schema.flags,
        n_children: schema.n_children,
        children: schema.children,
        dictionary: schema.dictionary,
        release: None,
        private_data: std::ptr::null_mut(),
    }
}

/// A copy of `array`'s fields with no ownership (`release` unset).
fn alias_array(array: &ArrowArray) -> ArrowArray {
    ArrowArray {
        length: array.length,
        null_count: array.null_count,
        offset: array.offset,
        n_buffers: array.n_buffers,
        n_children: array.n_children,
        buffers: array.buffers,
        children: array.children,
        dictionary: array.dictionary,
        release: None,
        private_data: std::ptr::null_mut(),
    }
}

unsafe extern "C" fn release_counted_schema(schema: *mut ArrowSchema) {
    // SAFETY: called by the owner of a live struct made by `count_releases`,
    // once (`release` is cleared below), so `private_data` is its boxed
    // `Counted<ArrowSchema>`, reclaimed here.
    let outer = unsafe { &mut *schema };
    // SAFETY: as above.
    let mut counted = unsafe { Box::from_raw(outer.private_data.cast::<Counted<ArrowSchema>>()) };
    counted.counts.schema.fetch_add(1, Ordering::SeqCst);
    if let Some(release) = counted.inner.release {
        // SAFETY: the box owns the wrapped struct, which is live.
        unsafe { release(&mut counted.inner) };
    }
    outer.release = None;
}

unsafe extern "C" fn release_counted_array(array: *mut ArrowArray) {
    // SAFETY: as in `release_counted_schema`, for `Counted<ArrowArray>`.
    let outer = unsafe { &mut *array };
    // SAFETY: as above.
    let mut counted = unsafe { Box::from_raw(outer.private_data.cast::<Counted<ArrowArray>>()) };
    counted.counts.array.fetch_add(1, Ordering::SeqCst);
    if let Some(release) = counted.inner.release {
        // SAFETY: the box owns the wrapped array, which is live.
        unsafe { release(&mut counted.inner) };
    }
    outer.release = None;
}
