//! The runner protocol's wire format: what one length-prefixed frame on the
//! socket between the host and a `stowage-runner` holds, and how a value
//! tree is laid out in shared memory. Pure encoding and decoding; the
//! socket, descriptors and mappings are `shm.rs`'s.
//!
//! A frame is a little-endian `u32` body length, then the body: a tag byte
//! and fields. Integers are little-endian, strings and lists carry a `u32`
//! count. Payloads never appear in a frame: a request names a [`Region`] of
//! a descriptor sent beside the frame (`SCM_RIGHTS`), in the order the
//! frame lists them.
//!
//! Invariant: decoding never trusts a count or offset: every read is
//! bounds-checked against the bytes at hand, a value tree nests at most
//! [`MAX_DEPTH`] deep, and a region must lie inside its source. The host
//! decodes what a runner sends as untrusted input through here.
//!
//! Decision: the runner's hello carries the declaration as the loader
//! validated it inside the runner; the host validates it again
//! (semver, kind names, plugin name) before using it.
//! Decision: Arrow values cross as their C Data layout (`arrow.rs`): the
//! schema tree inline, each array buffer a region; a type `arrow.rs` does
//! not carry fails with [`WireError::Arrow`] (an unsupported dispatch
//! error), one that fails validation with [`WireError::BadArrow`].

use semver::{Version, VersionReq};
use stowage_plugin_api::ErrorKind;

use super::arrow::{self, ArrayDesc, SchemaDesc};
use crate::serializer::{is_valid_plugin_name, ArtifactMeta, PluginInfo, Written};
use crate::value::{ArrowTable, Buffer, ClassSource, Kind, Tensor, TensorMap, Value};

/// Largest frame either side accepts (payloads travel in shared memory).
pub(crate) const MAX_FRAME: usize = 16 << 20;
/// Deepest value tree either side decodes.
pub(crate) const MAX_DEPTH: usize = 128;

/// What a frame or value tree failed to decode with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    /// Fewer bytes than a field needs.
    #[error("truncated message: {0}")]
    Truncated(&'static str),
    /// An unknown tag.
    #[error("unknown {what} tag {tag}")]
    BadTag {
        /// What was being read.
        what: &'static str,
        /// The tag.
        tag: u8,
    },
    /// A string that is not UTF-8.
    #[error("{0} is not UTF-8")]
    BadUtf8(&'static str),
    /// Bytes left after the message.
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    /// A region outside its source, or naming a source that was not sent.
    #[error(
        "region {offset}+{len} of source {source_index} is outside the {available} bytes sent"
    )]
    BadRegion {
        /// Source index.
        source_index: u32,
        /// Offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Bytes of that source.
        available: u64,
    },
    /// A value tree nested deeper than [`MAX_DEPTH`].
    #[error("value nests deeper than {MAX_DEPTH}")]
    TooDeep,
    /// A declaration the host does not accept.
    #[error("invalid declaration from runner: {0}")]
    BadDeclaration(String),
    /// An Arrow value of a type not carried.
    #[error("{0}")]
    Arrow(String),
    /// An Arrow value from a runner that fails validation.
    #[error("invalid arrow data: {0}")]
    BadArrow(String),
}

/// Bytes `offset..offset+len` of source `source` (a descriptor sent beside
/// the frame, or a blob; see each message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    /// Which source.
    pub source: u32,
    /// Start.
    pub offset: u64,
    /// Length.
    pub len: u64,
}

impl Region {
    /// The bytes of this region in `sources`, validated.
    pub(crate) fn resolve(&self, sources: &[Buffer]) -> Result<Buffer, WireError> {
        let bad = |available: u64| WireError::BadRegion {
            source_index: self.source,
            offset: self.offset,
            len: self.len,
            available,
        };
        let source = sources.get(self.source as usize).ok_or_else(|| bad(0))?;
        let available = source.len() as u64;
        let end = self
            .offset
            .checked_add(self.len)
            .ok_or_else(|| bad(available))?;
        if end > available {
            return Err(bad(available));
        }
        source
            .slice(self.offset as usize..end as usize)
            .ok_or_else(|| bad(available))
    }
}

/// An entry point, as named in messages to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// `can_serialize`.
    CanSerialize,
    /// `serialize`.
    Serialize,
    /// `can_deserialize`.
    CanDeserialize,
    /// `deserialize`.
    Deserialize,
    /// `sniff`.
    Sniff,
    /// `ingest`.
    Ingest,
    /// `export`.
    Export,
    /// `describe`.
    Describe,
    /// Starting the runner and loading the library.
    Init,
}

impl Entry {
    /// Its name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Entry::CanSerialize => "can_serialize",
            Entry::Serialize => "serialize",
            Entry::CanDeserialize => "can_deserialize",
            Entry::Deserialize => "deserialize",
            Entry::Sniff => "sniff",
            Entry::Ingest => "ingest",
            Entry::Export => "export",
            Entry::Describe => "describe",
            Entry::Init => "init",
        }
    }
}

/// Host → runner. Regions name descriptors sent with the frame (source `i`
/// is the `i`-th descriptor).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `can_serialize` of the value tree at `value`.
    CanSerialize {
        /// The encoded value tree.
        value: Region,
    },
    /// `serialize`.
    Serialize {
        /// The encoded value tree.
        value: Region,
        /// Options.
        options: Vec<(String, String)>,
    },
    /// `can_deserialize`.
    CanDeserialize {
        /// Metadata.
        meta: ArtifactMeta,
    },
    /// `deserialize`.
    Deserialize {
        /// Metadata.
        meta: ArtifactMeta,
        /// Blob names and where their bytes are.
        blobs: Vec<(String, Region)>,
    },
    /// `sniff`.
    Sniff {
        /// The prefix.
        prefix: Region,
    },
    /// `ingest`.
    Ingest {
        /// The file.
        file: Region,
        /// Options.
        options: Vec<(String, String)>,
    },
    /// `export`.
    Export {
        /// Metadata.
        meta: ArtifactMeta,
        /// Blobs.
        blobs: Vec<(String, Region)>,
    },
    /// `describe`.
    Describe {
        /// Metadata.
        meta: ArtifactMeta,
        /// Blobs.
        blobs: Vec<(String, Region)>,
    },
}

impl Request {
    /// The entry point it calls.
    pub(crate) fn entry(&self) -> Entry {
        match self {
            Request::CanSerialize { .. } => Entry::CanSerialize,
            Request::Serialize { .. } => Entry::Serialize,
            Request::CanDeserialize { .. } => Entry::CanDeserialize,
            Request::Deserialize { .. } => Entry::Deserialize,
            Request::Sniff { .. } => Entry::Sniff,
            Request::Ingest { .. } => Entry::Ingest,
            Request::Export { .. } => Entry::Export,
            Request::Describe { .. } => Entry::Describe,
        }
    }
}

/// Runner → host. Regions in `Blobs` and `Value` are of the one descriptor
/// sent with the reply (source 0); a value tree's payloads may also name
/// source `1 + i`, the request's `i`-th blob (zero-copy loads).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// The library loaded; its declaration.
    Hello(PluginInfo),
    /// The library did not load: the loader's one-line reason.
    HelloFailed(String),
    /// `dlopen` missed one of the library's own dependencies (named).
    MissingDependency(String),
    /// A `can_*`/`sniff` answer.
    Bool(bool),
    /// Blobs written (`serialize`, `ingest`: with metadata; `export`:
    /// without).
    Blobs {
        /// Metadata, for `serialize`/`ingest`.
        written: Option<Written>,
        /// `(name, region)` of each blob in write order.
        blobs: Vec<(String, Region)>,
    },
    /// A value tree (`deserialize`).
    Value(Region),
    /// `describe`: `None` when the plugin has none.
    Text(Option<String>),
    /// The call failed inside the plugin.
    Error {
        /// Its kind.
        kind: ErrorKind,
        /// Its message.
        message: String,
    },
}

/// Appends fields to a frame body.
#[derive(Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.buf.extend_from_slice(b);
    }
    fn region(&mut self, r: &Region) {
        self.u32(r.source);
        self.u64(r.offset);
        self.u64(r.len);
    }
    fn pairs(&mut self, pairs: &[(String, String)]) {
        self.count(pairs.len());
        for (k, v) in pairs {
            self.str(k);
            self.str(v);
        }
    }
    fn strings(&mut self, items: &[String]) {
        self.count(items.len());
        for s in items {
            self.str(s);
        }
    }
    fn meta(&mut self, m: &ArtifactMeta) {
        self.str(&m.obj_type);
        self.str(&m.encoding);
        self.u32(m.encoding_version);
        self.pairs(&m.info);
        self.count(m.blobs.len());
        for (name, size) in &m.blobs {
            self.str(name);
            self.u64(*size);
        }
    }
    fn blobs(&mut self, blobs: &[(String, Region)]) {
        self.count(blobs.len());
        for (name, region) in blobs {
            self.str(name);
            self.region(region);
        }
    }
    fn written(&mut self, w: &Written) {
        self.str(&w.obj_type);
        self.str(&w.encoding);
        self.u32(w.encoding_version);
        self.pairs(&w.info);
    }
    /// The frame: length prefix and body.
    pub(crate) fn frame(self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(4 + self.buf.len());
        frame.extend_from_slice(&(self.buf.len() as u32).to_le_bytes());
        frame.extend_from_slice(&self.buf);
        frame
    }
    /// The body alone (value trees written into shared memory).
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a frame body or a value tree.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Decoder { buf }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        let b = self.take(8, what)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Ok(u64::from_le_bytes(raw))
    }
    /// A count, checked against the bytes left (each item needs at least
    /// `min_item` bytes), so a forged count cannot reserve memory.
    fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item.max(1)) > self.buf.len() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }
    fn bytes(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        let n = self.count(1, what)?;
        Ok(self.take(n, what)?.to_vec())
    }
    fn str(&mut self, what: &'static str) -> Result<String, WireError> {
        let n = self.count(1, what)?;
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8(what))
    }
    fn region(&mut self) -> Result<Region, WireError> {
        Ok(Region {
            source: self.u32("region")?,
            offset: self.u64("region")?,
            len: self.u64("region")?,
        })
    }
    fn pairs(&mut self, what: &'static str) -> Result<Vec<(String, String)>, WireError> {
        let n = self.count(8, what)?;
        (0..n)
            .map(|_| Ok((self.str(what)?, self.str(what)?)))
            .collect()
    }
    fn strings(&mut self, what: &'static str) -> Result<Vec<String>, WireError> {
        let n = self.count(4, what)?;
        (0..n).map(|_| self.str(what)).collect()
    }
    fn meta(&mut self) -> Result<ArtifactMeta, WireError> {
        let obj_type = self.str("obj_type")?;
        let encoding = self.str("encoding")?;
        let encoding_version = self.u32("encoding version")?;
        let info = self.pairs("info")?;
        let n = self.count(12, "blob sizes")?;
        let blobs = (0..n)
            .map(|_| Ok((self.str("blob name")?, self.u64("blob size")?)))
            .collect::<Result<_, WireError>>()?;
        Ok(ArtifactMeta {
            obj_type,
            encoding,
            encoding_version,
            info,
            blobs,
        })
    }
    fn blobs(&mut self) -> Result<Vec<(String, Region)>, WireError> {
        let n = self.count(24, "blobs")?;
        (0..n)
            .map(|_| Ok((self.str("blob name")?, self.region()?)))
            .collect()
    }
    fn written(&mut self) -> Result<Written, WireError> {
        Ok(Written {
            obj_type: self.str("obj_type")?,
            encoding: self.str("encoding")?,
            encoding_version: self.u32("encoding version")?,
            info: self.pairs("info")?,
            // A plugin writes one value; only the built-in composite has parts.
            parts: Vec::new(),
        })
    }
    fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::Trailing(self.buf.len()))
        }
    }
}

/// The frame of a request.
pub(crate) fn encode_request(request: &Request) -> Vec<u8> {
    let mut e = Encoder::default();
    match request {
        Request::CanSerialize { value } => {
            e.u8(1);
            e.region(value);
        }
        Request::Serialize { value, options } => {
            e.u8(2);
            e.region(value);
            e.pairs(options);
        }
        Request::CanDeserialize { meta } => {
            e.u8(3);
            e.meta(meta);
        }
        Request::Deserialize { meta, blobs } => {
            e.u8(4);
            e.meta(meta);
            e.blobs(blobs);
        }
        Request::Sniff { prefix } => {
            e.u8(5);
            e.region(prefix);
        }
        Request::Ingest { file, options } => {
            e.u8(6);
            e.region(file);
            e.pairs(options);
        }
        Request::Export { meta, blobs } => {
            e.u8(7);
            e.meta(meta);
            e.blobs(blobs);
        }
        Request::Describe { meta, blobs } => {
            e.u8(8);
            e.meta(meta);
            e.blobs(blobs);
        }
    }
    e.frame()
}

/// A request body (without its length prefix).
pub(crate) fn decode_request(body: &[u8]) -> Result<Request, WireError> {
    let mut d = Decoder::new(body);
    let request = match d.u8("request")? {
        1 => Request::CanSerialize { value: d.region()? },
        2 => Request::Serialize {
            value: d.region()?,
            options: d.pairs("options")?,
        },
        3 => Request::CanDeserialize { meta: d.meta()? },
        4 => Request::Deserialize {
            meta: d.meta()?,
            blobs: d.blobs()?,
        },
        5 => Request::Sniff {
            prefix: d.region()?,
        },
        6 => Request::Ingest {
            file: d.region()?,
            options: d.pairs("options")?,
        },
        7 => Request::Export {
            meta: d.meta()?,
            blobs: d.blobs()?,
        },
        8 => Request::Describe {
            meta: d.meta()?,
            blobs: d.blobs()?,
        },
        tag => {
            return Err(WireError::BadTag {
                what: "request",
                tag,
            })
        }
    };
    d.finish()?;
    Ok(request)
}

fn kind_tag(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::InvalidInput => 0,
        ErrorKind::Unsupported => 1,
        ErrorKind::Panic => 3,
        _ => 2,
    }
}

/// The frame of a reply.
pub(crate) fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut e = Encoder::default();
    match reply {
        Reply::Hello(info) => {
            e.u8(1);
            e.str(&info.name);
            e.str(&info.version.to_string());
            e.str(&info.interface_version);
            e.u32(info.default_priority);
            let kinds: Vec<String> = info.kinds.iter().map(|k| k.name().to_owned()).collect();
            e.strings(&kinds);
            e.strings(&info.reads);
            e.strings(&info.writes);
            let requires: Vec<(String, String)> = info
                .requires
                .iter()
                .map(|(n, r)| (n.clone(), r.to_string()))
                .collect();
            e.pairs(&requires);
            e.strings(&info.option_keys);
            e.u8(u8::from(info.has_describe));
        }
        Reply::HelloFailed(message) => {
            e.u8(2);
            e.str(message);
        }
        Reply::MissingDependency(name) => {
            e.u8(3);
            e.str(name);
        }
        Reply::Bool(b) => {
            e.u8(4);
            e.u8(u8::from(*b));
        }
        Reply::Blobs { written, blobs } => {
            e.u8(5);
            match written {
                Some(w) => {
                    e.u8(1);
                    e.written(w);
                }
                None => e.u8(0),
            }
            e.blobs(blobs);
        }
        Reply::Value(region) => {
            e.u8(6);
            e.region(region);
        }
        Reply::Text(text) => {
            e.u8(7);
            match text {
                Some(t) => {
                    e.u8(1);
                    e.str(t);
                }
                None => e.u8(0),
            }
        }
        Reply::Error { kind, message } => {
            e.u8(8);
            e.u8(kind_tag(*kind));
            e.str(message);
        }
    }
    e.frame()
}

/// A reply body (untrusted: from the runner).
pub(crate) fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    let mut d = Decoder::new(body);
    let reply = match d.u8("reply")? {
        1 => Reply::Hello(decode_hello(&mut d)?),
        2 => Reply::HelloFailed(d.str("reason")?),
        3 => Reply::MissingDependency(d.str("dependency")?),
        4 => Reply::Bool(d.u8("bool")? != 0),
        5 => {
            let written = match d.u8("metadata flag")? {
                0 => None,
                _ => Some(d.written()?),
            };
            Reply::Blobs {
                written,
                blobs: d.blobs()?,
            }
        }
        6 => Reply::Value(d.region()?),
        7 => Reply::Text(match d.u8("text flag")? {
            0 => None,
            _ => Some(d.str("text")?),
        }),
        8 => {
            let kind = match d.u8("error kind")? {
                0 => ErrorKind::InvalidInput,
                1 => ErrorKind::Unsupported,
                3 => ErrorKind::Panic,
                _ => ErrorKind::Internal,
            };
            Reply::Error {
                kind,
                message: d.str("message")?,
            }
        }
        tag => return Err(WireError::BadTag { what: "reply", tag }),
    };
    d.finish()?;
    Ok(reply)
}

fn decode_hello(d: &mut Decoder<'_>) -> Result<PluginInfo, WireError> {
    let bad = WireError::BadDeclaration;
    let name = d.str("name")?;
    if !is_valid_plugin_name(&name) {
        return Err(bad(format!("plugin name {name:?} is not [A-Za-z0-9_-]+")));
    }
    let version = d.str("version")?;
    let version = Version::parse(&version).map_err(|e| bad(format!("version {version:?}: {e}")))?;
    let interface_version = d.str("interface version")?;
    let default_priority = d.u32("priority")?;
    let kinds = d
        .strings("kinds")?
        .iter()
        .map(|k| Kind::from_name(k).ok_or_else(|| bad(format!("unknown value kind {k:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let reads = d.strings("reads")?;
    let writes = d.strings("writes")?;
    let requires = d
        .pairs("requires")?
        .into_iter()
        .map(|(n, r)| {
            VersionReq::parse(&r)
                .map(|req| (n.clone(), req))
                .map_err(|e| bad(format!("requirement {n} {r:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let option_keys = d.strings("option keys")?;
    let has_describe = d.u8("describe flag")? != 0;
    Ok(PluginInfo {
        name,
        version,
        interface_version,
        default_priority,
        kinds,
        reads,
        writes,
        requires,
        option_keys,
        has_describe,
    })
}

/// Where a value tree's payload bytes go while encoding: returns the
/// region the bytes will be read from.
pub(crate) trait Payloads {
    /// Places `bytes` and says where they are.
    fn place(&mut self, bytes: &[u8]) -> Region;
    /// Places a string's bytes (class source text is payload too).
    fn place_str(&mut self, text: &str) -> Region;
}

/// Encodes a value tree; payloads go through `payloads`.
pub(crate) fn encode_value(
    value: &Value,
    payloads: &mut dyn Payloads,
) -> Result<Vec<u8>, WireError> {
    let mut e = Encoder::default();
    write_value(&mut e, value, payloads)?;
    Ok(e.into_bytes())
}

fn write_tensor(e: &mut Encoder, t: &Tensor, payloads: &mut dyn Payloads) {
    e.str(&t.dtype);
    e.count(t.shape.len());
    for d in &t.shape {
        e.u64(*d);
    }
    let region = payloads.place(&t.data);
    e.region(&region);
}

fn write_value(
    e: &mut Encoder,
    value: &Value,
    payloads: &mut dyn Payloads,
) -> Result<(), WireError> {
    match value {
        Value::Null => e.u8(0),
        Value::Bool(b) => {
            e.u8(1);
            e.u8(u8::from(*b));
        }
        Value::Int(i) => {
            e.u8(2);
            e.u64(*i as u64);
        }
        Value::Float(f) => {
            e.u8(3);
            e.u64(f.to_bits());
        }
        Value::String(s) => {
            e.u8(4);
            let region = payloads.place_str(s);
            e.region(&region);
        }
        Value::Bytes(b) => {
            e.u8(5);
            let region = payloads.place(b);
            e.region(&region);
        }
        Value::List(items) => {
            e.u8(6);
            e.count(items.len());
            for item in items {
                write_value(e, item, payloads)?;
            }
        }
        Value::Map(entries) => {
            e.u8(7);
            e.count(entries.len());
            for (k, v) in entries {
                e.str(k);
                write_value(e, v, payloads)?;
            }
        }
        Value::Tensor(t) => {
            e.u8(8);
            write_tensor(e, t, payloads);
        }
        Value::TensorMap(m) => {
            e.u8(9);
            e.count(m.tensors.len());
            for (name, t) in &m.tensors {
                e.str(name);
                write_tensor(e, t, payloads);
            }
            e.pairs(&m.metadata);
        }
        Value::ClassSource(c) => {
            e.u8(10);
            e.str(&c.qualname);
            match &c.module {
                Some(m) => {
                    e.u8(1);
                    e.str(m);
                }
                None => e.u8(0),
            }
            let region = payloads.place_str(&c.source);
            e.region(&region);
        }
        Value::Arrow(table) => {
            e.u8(11);
            e.count(table.batches().len());
            for batch in table.batches() {
                let (schema, array) = arrow::read_batch(batch).map_err(WireError::Arrow)?;
                write_schema(e, &schema);
                write_array(e, &array, payloads);
            }
        }
    }
    Ok(())
}

fn write_schema(e: &mut Encoder, s: &SchemaDesc) {
    e.str(&s.format);
    match &s.name {
        Some(n) => {
            e.u8(1);
            e.str(n);
        }
        None => e.u8(0),
    }
    match &s.metadata {
        Some(m) => {
            e.u8(1);
            e.bytes(m);
        }
        None => e.u8(0),
    }
    e.u64(s.flags as u64);
    e.count(s.children.len());
    for child in &s.children {
        write_schema(e, child);
    }
    match &s.dictionary {
        Some(d) => {
            e.u8(1);
            write_schema(e, d);
        }
        None => e.u8(0),
    }
}

fn write_array(e: &mut Encoder, a: &ArrayDesc<&[u8]>, payloads: &mut dyn Payloads) {
    e.u64(a.length as u64);
    e.u64(a.null_count as u64);
    e.u64(a.offset as u64);
    e.count(a.buffers.len());
    for buffer in &a.buffers {
        match buffer {
            Some(bytes) => {
                e.u8(1);
                let region = payloads.place(bytes);
                e.region(&region);
            }
            None => e.u8(0),
        }
    }
    e.count(a.children.len());
    for child in &a.children {
        write_array(e, child, payloads);
    }
    match &a.dictionary {
        Some(d) => {
            e.u8(1);
            write_array(e, d, payloads);
        }
        None => e.u8(0),
    }
}

fn read_schema(d: &mut Decoder<'_>, depth: usize) -> Result<SchemaDesc, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    let format = d.str("arrow format")?;
    let name = match d.u8("arrow name flag")? {
        0 => None,
        _ => Some(d.str("arrow name")?),
    };
    let metadata = match d.u8("arrow metadata flag")? {
        0 => None,
        _ => Some(d.bytes("arrow metadata")?),
    };
    let flags = d.u64("arrow flags")? as i64;
    let n = d.count(6, "arrow children")?;
    let children = (0..n)
        .map(|_| read_schema(d, depth + 1))
        .collect::<Result<_, _>>()?;
    let dictionary = match d.u8("arrow dictionary flag")? {
        0 => None,
        _ => Some(Box::new(read_schema(d, depth + 1)?)),
    };
    Ok(SchemaDesc {
        format,
        name,
        metadata,
        flags,
        children,
        dictionary,
    })
}

fn read_array(
    d: &mut Decoder<'_>,
    sources: &[Buffer],
    depth: usize,
) -> Result<ArrayDesc<Buffer>, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    let length = d.u64("arrow length")? as i64;
    let null_count = d.u64("arrow null count")? as i64;
    let offset = d.u64("arrow offset")? as i64;
    let n = d.count(1, "arrow buffers")?;
    let buffers = (0..n)
        .map(|_| match d.u8("arrow buffer flag")? {
            0 => Ok(None),
            _ => d.region()?.resolve(sources).map(Some),
        })
        .collect::<Result<_, WireError>>()?;
    let n = d.count(33, "arrow children")?;
    let children = (0..n)
        .map(|_| read_array(d, sources, depth + 1))
        .collect::<Result<_, _>>()?;
    let dictionary = match d.u8("arrow dictionary flag")? {
        0 => None,
        _ => Some(Box::new(read_array(d, sources, depth + 1)?)),
    };
    Ok(ArrayDesc {
        length,
        null_count,
        offset,
        buffers,
        children,
        dictionary,
    })
}

/// Decodes a value tree whose regions name `sources`; byte payloads are
/// views into them (no copy), strings are copied out and checked.
pub(crate) fn decode_value(tree: &[u8], sources: &[Buffer]) -> Result<Value, WireError> {
    let mut d = Decoder::new(tree);
    let value = read_value(&mut d, sources, 0)?;
    d.finish()?;
    Ok(value)
}

fn read_text(
    d: &mut Decoder<'_>,
    sources: &[Buffer],
    what: &'static str,
) -> Result<String, WireError> {
    let bytes = d.region()?.resolve(sources)?;
    std::str::from_utf8(&bytes)
        .map(str::to_owned)
        .map_err(|_| WireError::BadUtf8(what))
}

fn read_tensor(d: &mut Decoder<'_>, sources: &[Buffer]) -> Result<Tensor, WireError> {
    let dtype = d.str("dtype")?;
    let n = d.count(8, "shape")?;
    let shape = (0..n).map(|_| d.u64("shape")).collect::<Result<_, _>>()?;
    let data = d.region()?.resolve(sources)?;
    Ok(Tensor { dtype, shape, data })
}

fn read_value(d: &mut Decoder<'_>, sources: &[Buffer], depth: usize) -> Result<Value, WireError> {
    if depth > MAX_DEPTH {
        return Err(WireError::TooDeep);
    }
    Ok(match d.u8("value")? {
        0 => Value::Null,
        1 => Value::Bool(d.u8("bool")? != 0),
        2 => Value::Int(d.u64("int")? as i64),
        3 => Value::Float(f64::from_bits(d.u64("float")?)),
        4 => Value::String(read_text(d, sources, "string")?),
        5 => Value::Bytes(d.region()?.resolve(sources)?),
        6 => {
            let n = d.count(1, "list")?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(d, sources, depth + 1)?);
            }
            Value::List(items)
        }
        7 => {
            let n = d.count(5, "map")?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let key = d.str("map key")?;
                entries.push((key, read_value(d, sources, depth + 1)?));
            }
            Value::Map(entries)
        }
        8 => Value::Tensor(read_tensor(d, sources)?),
        9 => {
            let n = d.count(28, "tensor map")?;
            let mut tensors = Vec::with_capacity(n);
            for _ in 0..n {
                let name = d.str("tensor name")?;
                tensors.push((name, read_tensor(d, sources)?));
            }
            Value::TensorMap(TensorMap {
                tensors,
                metadata: d.pairs("tensor metadata")?,
            })
        }
        10 => {
            let qualname = d.str("qualname")?;
            let module = match d.u8("module flag")? {
                0 => None,
                _ => Some(d.str("module")?),
            };
            let source = read_text(d, sources, "class source")?;
            Value::ClassSource(ClassSource {
                qualname,
                module,
                source,
            })
        }
        11 => {
            let n = d.count(40, "arrow batches")?;
            let mut batches = Vec::with_capacity(n);
            for _ in 0..n {
                let schema = read_schema(d, depth + 1)?;
                let array = read_array(d, sources, depth + 1)?;
                batches.push(arrow::build_batch(&schema, &array).map_err(WireError::BadArrow)?);
            }
            Value::Arrow(ArrowTable::new(batches))
        }
        tag => return Err(WireError::BadTag { what: "value", tag }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places payloads back to back in one buffer (source 0).
    #[derive(Default)]
    struct Flat(Vec<u8>);

    impl Payloads for Flat {
        fn place(&mut self, bytes: &[u8]) -> Region {
            self.place_bytes(bytes)
        }
        fn place_str(&mut self, text: &str) -> Region {
            self.place_bytes(text.as_bytes())
        }
    }

    impl Flat {
        fn place_bytes(&mut self, bytes: &[u8]) -> Region {
            let offset = self.0.len() as u64;
            self.0.extend_from_slice(bytes);
            Region {
                source: 0,
                offset,
                len: bytes.len() as u64,
            }
        }
    }

    #[test]
    fn every_carried_kind_round_trips() {
        let value = Value::List(vec![
            Value::Null,
            Value::Bool(true),
            Value::Int(-7),
            Value::Float(1.5),
            Value::String("héllo".into()),
            Value::Bytes(Buffer::from_vec(vec![1, 2, 3])),
            Value::Map(vec![("k".into(), Value::Int(1))]),
            Value::Tensor(Tensor {
                dtype: "F32".into(),
                shape: vec![2],
                data: Buffer::from_vec(vec![0; 8]),
            }),
            Value::ClassSource(ClassSource {
                qualname: "A".into(),
                module: Some("m".into()),
                source: "class A:\n    pass\n".into(),
            }),
        ]);
        let mut flat = Flat::default();
        let tree = encode_value(&value, &mut flat).expect("encodes");
        let sources = [Buffer::from_vec(flat.0)];
        assert_eq!(decode_value(&tree, &sources), Ok(value));
    }

    #[test]
    fn a_region_outside_its_source_is_refused() {
        let mut e = Encoder::default();
        e.u8(5);
        e.region(&Region {
            source: 0,
            offset: 2,
            len: 5,
        });
        let sources = [Buffer::from_vec(vec![0; 4])];
        assert_eq!(
            decode_value(&e.into_bytes(), &sources).map_err(|e| e.to_string()),
            Err("region 2+5 of source 0 is outside the 4 bytes sent".to_owned())
        );
    }

    #[test]
    fn a_forged_count_is_truncation_not_an_allocation() {
        let mut e = Encoder::default();
        e.u8(6);
        e.u32(u32::MAX);
        assert_eq!(
            decode_value(&e.into_bytes(), &[]),
            Err(WireError::Truncated("list"))
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let tree = [6u8, 1, 0, 0, 0].repeat(MAX_DEPTH + 2);
        assert_eq!(decode_value(&tree, &[]), Err(WireError::TooDeep));
    }

    #[test]
    fn replies_round_trip() {
        for reply in [
            Reply::Bool(true),
            Reply::Text(Some("x".into())),
            Reply::Error {
                kind: ErrorKind::InvalidInput,
                message: "bad".into(),
            },
            Reply::Blobs {
                written: None,
                blobs: vec![(
                    "data".into(),
                    Region {
                        source: 0,
                        offset: 0,
                        len: 3,
                    },
                )],
            },
        ] {
            let frame = encode_reply(&reply);
            assert_eq!(decode_reply(&frame[4..]), Ok(reply));
        }
    }
}
