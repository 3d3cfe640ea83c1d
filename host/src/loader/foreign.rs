//! [`ForeignPlugin`]: a loaded library seen through the host's
//! [`Serializer`] trait. Converts arguments to ABI structs, calls, converts
//! results and errors back.
//!
//! Invariant: every pointer lent to a call (sink context, metadata, blobs,
//! value nodes) outlives the call; nothing the plugin returns is trusted to
//! point anywhere but its own owner or the lent blobs.

use std::ffi::c_void;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::std_types::{RResult, RSlice, RStr};
use stowage_plugin_api::abi::{
    AbiBlob, AbiError, AbiErrorKind, AbiMetadata, AbiMetadataRef, AbiSink, AbiStrPair, AbiValue,
    PluginModRef,
};
use stowage_plugin_api::ErrorKind;

use super::convert::{value_from_owned, Malformed};
use super::DescribeFn;
use crate::serializer::{
    ArtifactMeta, BlobSink, CallError, CallValue, PluginInfo, Serializer, Written,
};
use crate::value::{Buffer, Value};

/// The plugin's `can_serialize` entry point.
type CanSerializeFn = for<'a> extern "C" fn(&AbiValue<'a>) -> RResult<bool, AbiError>;

/// A plugin loaded from a library (never unloaded).
pub struct ForeignPlugin {
    /// Copied out of the module: the module table lives in the plugin's own
    /// data segment, and reading it on every call was a cache miss per
    /// declining candidate, the hot path of dispatch.
    can_serialize: CanSerializeFn,
    info: PluginInfo,
    module: PluginModRef,
    describe: Option<DescribeFn>,
}

impl ForeignPlugin {
    pub(super) fn new(
        info: PluginInfo,
        module: PluginModRef,
        describe: Option<DescribeFn>,
    ) -> Self {
        ForeignPlugin {
            can_serialize: module.can_serialize(),
            info,
            module,
            describe,
        }
    }
}

fn call_error(error: AbiError) -> CallError {
    CallError::new(ErrorKind::from_abi(error.kind), error.message.into_string())
}

fn result<T>(result: RResult<T, AbiError>) -> Result<T, CallError> {
    result.into_result().map_err(call_error)
}

fn written(meta: AbiMetadata) -> Written {
    Written {
        obj_type: meta.obj_type.into_string(),
        encoding: meta.encoding.into_string(),
        encoding_version: meta.encoding_version,
        info: meta
            .info
            .into_iter()
            .map(|p| (p.key.into_string(), p.value.into_string()))
            .collect(),
        parts: Vec::new(),
    }
}

fn str_pairs(pairs: &[(String, String)]) -> Vec<AbiStrPair<'_>> {
    pairs
        .iter()
        .map(|(key, value)| AbiStrPair {
            key: RStr::from_str(key),
            value: RStr::from_str(value),
        })
        .collect()
}

/// The SDK's own rendering of an artifact with no `describe` (type,
/// encoding, blob sizes), so a 1.0 plugin's artifacts read the same in
/// `show` as a plugin that kept the SDK's default.
pub fn generic_description(meta: &ArtifactMeta) -> String {
    let parts = MetaParts::new(meta);
    let abi = parts.abi(meta);
    stowage_plugin_api::generic_description(&stowage_plugin_api::MetadataRef::from_abi(&abi))
}

/// Borrowed ABI parts of an [`ArtifactMeta`], alive for one call.
struct MetaParts<'m> {
    info: Vec<AbiStrPair<'m>>,
    names: Vec<RStr<'m>>,
    sizes: Vec<u64>,
}

impl<'m> MetaParts<'m> {
    fn new(meta: &'m ArtifactMeta) -> Self {
        MetaParts {
            info: str_pairs(&meta.info),
            names: meta.blobs.iter().map(|(n, _)| RStr::from_str(n)).collect(),
            sizes: meta.blobs.iter().map(|(_, s)| *s).collect(),
        }
    }
    fn abi(&'m self, meta: &'m ArtifactMeta) -> AbiMetadataRef<'m> {
        AbiMetadataRef {
            obj_type: RStr::from_str(&meta.obj_type),
            encoding: RStr::from_str(&meta.encoding),
            encoding_version: meta.encoding_version,
            info: RSlice::from_slice(&self.info),
            blob_names: RSlice::from_slice(&self.names),
            blob_sizes: RSlice::from_slice(&self.sizes),
        }
    }
}

fn abi_blobs(blobs: &[(String, Buffer)]) -> Vec<AbiBlob<'_>> {
    blobs
        .iter()
        .map(|(name, data)| AbiBlob {
            name: RStr::from_str(name),
            data: RSlice::from_slice(data),
        })
        .collect()
}

/// The host end of an [`AbiSink`]: forwards to a [`BlobSink`].
struct SinkBridge<'a> {
    sink: &'a mut dyn BlobSink,
}

fn sink_error(message: String) -> AbiError {
    AbiError {
        kind: AbiErrorKind::INTERNAL,
        message: format!("sink: {message}").into(),
    }
}

unsafe extern "C" fn bridge_begin_blob(ctx: *mut c_void, name: RStr<'_>) -> RResult<(), AbiError> {
    // SAFETY: `ctx` is the `SinkBridge` lent for the current call (see
    // `with_sink`), used by one thread.
    let bridge = unsafe { &mut *(ctx as *mut SinkBridge<'_>) };
    match catch_unwind(AssertUnwindSafe(|| bridge.sink.begin_blob(name.as_str()))) {
        Ok(Ok(())) => RResult::ROk(()),
        Ok(Err(message)) => RResult::RErr(sink_error(message)),
        Err(_) => RResult::RErr(sink_error("host sink panicked".to_owned())),
    }
}

unsafe extern "C" fn bridge_write(
    ctx: *mut c_void,
    bytes: RSlice<'_, u8>,
) -> RResult<(), AbiError> {
    // SAFETY: as in `bridge_begin_blob`.
    let bridge = unsafe { &mut *(ctx as *mut SinkBridge<'_>) };
    match catch_unwind(AssertUnwindSafe(|| bridge.sink.write(bytes.as_slice()))) {
        Ok(Ok(())) => RResult::ROk(()),
        Ok(Err(message)) => RResult::RErr(sink_error(message)),
        Err(_) => RResult::RErr(sink_error("host sink panicked".to_owned())),
    }
}

/// Lends `sink` to a plugin call as an [`AbiSink`].
fn with_sink<R>(sink: &mut dyn BlobSink, call: impl FnOnce(&mut AbiSink) -> R) -> R {
    let mut bridge = SinkBridge { sink };
    let mut abi = AbiSink {
        ctx: &mut bridge as *mut SinkBridge<'_> as *mut c_void,
        begin_blob: bridge_begin_blob,
        write: bridge_write,
    };
    call(&mut abi)
}

/// Adapts an `io::Write` to a sink that accepts exactly one blob.
pub(super) struct SingleFile<'w> {
    pub(super) out: &'w mut dyn Write,
    pub(super) started: bool,
}

impl BlobSink for SingleFile<'_> {
    fn begin_blob(&mut self, _name: &str) -> Result<(), String> {
        if std::mem::replace(&mut self.started, true) {
            return Err("export wrote more than one file".to_owned());
        }
        Ok(())
    }
    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        if !self.started {
            return Err("write before begin_blob".to_owned());
        }
        self.out.write_all(bytes).map_err(|e| e.to_string())
    }
}

impl Serializer for ForeignPlugin {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn can_serialize(&self, value: &CallValue<'_>) -> Result<bool, CallError> {
        value.with_prepared(|prepared| result((self.can_serialize)(prepared.for_call())))
    }

    fn serialize(
        &self,
        value: &CallValue<'_>,
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        let options = str_pairs(options);
        value.with_prepared(|prepared| {
            with_sink(sink, |abi_sink| {
                let call = self.module.serialize();
                result(call(
                    prepared.for_call(),
                    RSlice::from_slice(&options),
                    abi_sink,
                ))
                .map(written)
            })
        })
    }

    fn can_deserialize(&self, meta: &ArtifactMeta) -> Result<bool, CallError> {
        let parts = MetaParts::new(meta);
        result((self.module.can_deserialize())(&parts.abi(meta)))
    }

    fn deserialize(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Value, CallError> {
        let parts = MetaParts::new(meta);
        let abi_blobs = abi_blobs(blobs);
        let owned = result((self.module.deserialize())(
            &parts.abi(meta),
            RSlice::from_slice(&abi_blobs),
        ))?;
        let inputs = blobs.iter().map(|(_, data)| data.clone()).collect();
        value_from_owned(owned, inputs)
            .map_err(|Malformed(message)| CallError::new(ErrorKind::Internal, message))
    }

    fn sniff(&self, prefix: &[u8]) -> Result<bool, CallError> {
        result((self.module.sniff())(RSlice::from_slice(prefix)))
    }

    fn ingest(
        &self,
        file: &[u8],
        options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        let options = str_pairs(options);
        with_sink(sink, |abi_sink| {
            let call = self.module.ingest();
            result(call(
                RSlice::from_slice(file),
                RSlice::from_slice(&options),
                abi_sink,
            ))
            .map(written)
        })
    }

    fn export(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
        out: &mut dyn Write,
    ) -> Result<(), CallError> {
        let parts = MetaParts::new(meta);
        let abi_blobs = abi_blobs(blobs);
        let mut file = SingleFile {
            out,
            started: false,
        };
        with_sink(&mut file, |abi_sink| {
            let call = self.module.export();
            result(call(
                &parts.abi(meta),
                RSlice::from_slice(&abi_blobs),
                abi_sink,
            ))
        })
    }

    fn describe(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Option<String>, CallError> {
        let Some(describe) = self.describe else {
            return Ok(None);
        };
        let parts = MetaParts::new(meta);
        let abi_blobs = abi_blobs(blobs);
        result(describe(&parts.abi(meta), RSlice::from_slice(&abi_blobs)))
            .map(|s| Some(s.into_string()))
    }
}
