//! The built-in fallback serializer, `msgpack`: plain data (null, bool, int,
//! float, string, bytes, list, map) as one MessagePack blob, priority 9999.
//!
//! It lives in the host, so plain data always has somewhere to go, but it is
//! listed, toggled and dispatched exactly like a plugin (no special case in
//! the registry). Its standard file form (`stowage get`) is JSON; `ingest`
//! reads a JSON document (`stowage put --json`).
//!
//! Decision: map keys are MessagePack strings; an artifact with non-string
//! keys (written by something else) is refused as invalid input, not
//! stringified. Nesting deeper than [`MAX_DEPTH`] is refused both ways.

use std::io::Write;

use semver::Version;
use stowage_plugin_api::encodings::MSGPACK;

use crate::serializer::{
    host_interface, ArtifactMeta, BlobSink, CallError, CallValue, ErrorKind, PluginInfo,
    Serializer, Written, MAX_PLUGIN_PRIORITY,
};
use crate::value::{Buffer, Kind, Value};

/// The fallback's name (reserved: no plugin may take it).
pub const FALLBACK_NAME: &str = "msgpack";
/// The fallback's priority: one past the highest a plugin may have, so it is
/// tried last.
pub const FALLBACK_PRIORITY: u32 = MAX_PLUGIN_PRIORITY + 1;
/// Format version of the `msgpack` encoding.
pub const MSGPACK_FORMAT_VERSION: u32 = 1;
/// The one blob a fallback artifact has.
const BLOB: &str = "data";
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 256;
/// rmpv's decoding depth for [`MAX_DEPTH`] levels: rmpv counts a
/// container twice (the value, then its items) and a string or binary leaf
/// three times, so reading back what [`is_plain`] accepted needs about
/// twice the levels.
const DECODE_DEPTH: usize = 2 * MAX_DEPTH + 8;

/// The built-in MessagePack serializer.
pub(crate) struct Fallback {
    info: PluginInfo,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            info: PluginInfo {
                name: FALLBACK_NAME.to_owned(),
                version: Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0)),
                interface_version: host_interface(),
                default_priority: FALLBACK_PRIORITY,
                kinds: vec![
                    Kind::Null,
                    Kind::Bool,
                    Kind::Int,
                    Kind::Float,
                    Kind::String,
                    Kind::Bytes,
                    Kind::List,
                    Kind::Map,
                ],
                reads: vec![MSGPACK.to_owned()],
                writes: vec![MSGPACK.to_owned()],
                requires: Vec::new(),
                option_keys: Vec::new(),
                has_describe: true,
            },
        }
    }
}

fn invalid(message: impl Into<String>) -> CallError {
    CallError::new(ErrorKind::InvalidInput, message)
}

/// Whether `value` is plain data the fallback can hold, and not too deep.
fn is_plain(value: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    match value {
        Value::Null
        | Value::Bool(_)
        | Value::Int(_)
        | Value::Float(_)
        | Value::String(_)
        | Value::Bytes(_) => true,
        Value::List(items) => items.iter().all(|v| is_plain(v, depth + 1)),
        Value::Map(entries) => entries.iter().all(|(_, v)| is_plain(v, depth + 1)),
        _ => false,
    }
}

fn to_msgpack(value: &Value) -> Result<rmpv::Value, CallError> {
    Ok(match value {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Int(i) => rmpv::Value::from(*i),
        Value::Float(f) => rmpv::Value::F64(*f),
        Value::String(s) => rmpv::Value::from(s.as_str()),
        Value::Bytes(b) => rmpv::Value::Binary(b.to_vec()),
        Value::List(items) => {
            rmpv::Value::Array(items.iter().map(to_msgpack).collect::<Result<_, _>>()?)
        }
        Value::Map(entries) => rmpv::Value::Map(
            entries
                .iter()
                .map(|(k, v)| Ok((rmpv::Value::from(k.as_str()), to_msgpack(v)?)))
                .collect::<Result<_, CallError>>()?,
        ),
        other => {
            return Err(CallError::new(
                ErrorKind::Unsupported,
                format!("msgpack stores plain data, not {}", other.kind()),
            ))
        }
    })
}

fn from_msgpack(value: rmpv::Value) -> Result<Value, CallError> {
    Ok(match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => Value::Int(
            i.as_i64()
                .ok_or_else(|| invalid(format!("integer {i} does not fit a 64-bit signed int")))?,
        ),
        rmpv::Value::F32(f) => Value::Float(f64::from(f)),
        rmpv::Value::F64(f) => Value::Float(f),
        rmpv::Value::String(s) => Value::String(
            s.into_str()
                .ok_or_else(|| invalid("msgpack string is not UTF-8"))?,
        ),
        rmpv::Value::Binary(b) => Value::Bytes(Buffer::from_vec(b)),
        rmpv::Value::Array(items) => Value::List(
            items
                .into_iter()
                .map(from_msgpack)
                .collect::<Result<_, _>>()?,
        ),
        rmpv::Value::Map(entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| match k {
                    rmpv::Value::String(s) => Ok((
                        s.into_str()
                            .ok_or_else(|| invalid("msgpack map key is not UTF-8"))?,
                        from_msgpack(v)?,
                    )),
                    other => Err(invalid(format!("msgpack map key {other} is not a string"))),
                })
                .collect::<Result<_, _>>()?,
        ),
        rmpv::Value::Ext(tag, _) => {
            return Err(invalid(format!(
                "msgpack extension type {tag} is not supported"
            )))
        }
    })
}

fn decode(blobs: &[(String, Buffer)]) -> Result<Value, CallError> {
    let data = match blobs {
        [(name, data)] if name == BLOB => data,
        _ => {
            return Err(invalid(
                "a msgpack artifact has exactly one blob named data",
            ))
        }
    };
    let mut reader: &[u8] = data;
    let value = rmpv::decode::read_value_with_max_depth(&mut reader, DECODE_DEPTH)
        .map_err(|e| invalid(format!("malformed msgpack: {e}")))?;
    if !reader.is_empty() {
        return Err(invalid(format!(
            "{} trailing bytes after the msgpack value",
            reader.len()
        )));
    }
    from_msgpack(value)
}

fn write_blob(value: &Value, sink: &mut dyn BlobSink) -> Result<Written, CallError> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &to_msgpack(value)?)
        .map_err(|e| CallError::new(ErrorKind::Internal, e.to_string()))?;
    let sink_error =
        |message: String| CallError::new(ErrorKind::Internal, format!("sink: {message}"));
    sink.begin_blob(BLOB).map_err(sink_error)?;
    sink.write(&bytes).map_err(sink_error)?;
    Ok(Written {
        obj_type: value.kind().name().to_owned(),
        encoding: MSGPACK.to_owned(),
        encoding_version: MSGPACK_FORMAT_VERSION,
        info: Vec::new(),
        parts: Vec::new(),
    })
}

impl Serializer for Fallback {
    fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn can_serialize(&self, value: &CallValue<'_>) -> Result<bool, CallError> {
        Ok(is_plain(value.value(), 0))
    }

    fn serialize(
        &self,
        value: &CallValue<'_>,
        _options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        write_blob(value.value(), sink)
    }

    fn can_deserialize(&self, meta: &ArtifactMeta) -> Result<bool, CallError> {
        Ok(meta.encoding == MSGPACK && meta.encoding_version <= MSGPACK_FORMAT_VERSION)
    }

    fn deserialize(
        &self,
        _meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Value, CallError> {
        decode(blobs)
    }

    fn sniff(&self, _prefix: &[u8]) -> Result<bool, CallError> {
        // JSON is taken explicitly (`put --json`), never guessed.
        Ok(false)
    }

    fn ingest(
        &self,
        file: &[u8],
        _options: &[(String, String)],
        sink: &mut dyn BlobSink,
    ) -> Result<Written, CallError> {
        let json: serde_json::Value = serde_json::from_slice(file)
            .map_err(|e| invalid(format!("not a JSON document: {e}")))?;
        let value = Value::from_json(&json).map_err(|e| invalid(e.to_string()))?;
        write_blob(&value, sink)
    }

    fn export(
        &self,
        _meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
        out: &mut dyn Write,
    ) -> Result<(), CallError> {
        let json = decode(blobs)?
            .to_json()
            .map_err(|e| CallError::new(ErrorKind::Unsupported, format!("{e}; use --raw")))?;
        serde_json::to_writer_pretty(&mut *out, &json)
            .map_err(|e| CallError::new(ErrorKind::Internal, e.to_string()))?;
        out.write_all(b"\n")
            .map_err(|e| CallError::new(ErrorKind::Internal, e.to_string()))
    }

    fn describe(
        &self,
        meta: &ArtifactMeta,
        blobs: &[(String, Buffer)],
    ) -> Result<Option<String>, CallError> {
        let value = decode(blobs)?;
        let rendering = match value.to_json() {
            Ok(json) => json.to_string(),
            Err(_) => format!("{value:?}"),
        };
        const SHOWN: usize = 400;
        let shown = match rendering.char_indices().nth(SHOWN) {
            Some((at, _)) => format!("{}…", &rendering[..at]),
            None => rendering,
        };
        Ok(Some(format!(
            "{} (msgpack v{}): {shown}",
            meta.obj_type, meta.encoding_version
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serializer::MemorySink;

    fn round_trip(value: &Value) -> Value {
        let fallback = Fallback::default();
        let mut sink = MemorySink::default();
        fallback
            .serialize(&CallValue::new(value), &[], &mut sink)
            .expect("serializes");
        let blobs: Vec<(String, Buffer)> = sink
            .blobs
            .into_iter()
            .map(|(n, d)| (n, Buffer::from_vec(d)))
            .collect();
        let meta = ArtifactMeta {
            obj_type: value.kind().name().to_owned(),
            encoding: MSGPACK.to_owned(),
            encoding_version: 1,
            info: Vec::new(),
            blobs: Vec::new(),
        };
        fallback.deserialize(&meta, &blobs).expect("deserializes")
    }

    #[test]
    fn plain_data_round_trips() {
        let value = Value::Map(vec![
            ("i".into(), Value::Int(i64::MIN)),
            ("f".into(), Value::Float(-0.25)),
            ("b".into(), Value::Bytes(Buffer::from_vec(vec![0, 255]))),
            (
                "l".into(),
                Value::List(vec![
                    Value::Null,
                    Value::Bool(true),
                    Value::String("é".into()),
                ]),
            ),
        ]);
        assert_eq!(round_trip(&value), value);
    }

    #[test]
    fn refuses_non_plain_values() {
        let tensor = Value::Tensor(crate::value::Tensor {
            dtype: "F32".into(),
            shape: vec![],
            data: Buffer::from_vec(vec![0; 4]),
        });
        let value = Value::List(vec![tensor]);
        assert_eq!(
            Fallback::default().can_serialize(&CallValue::new(&value)),
            Ok(false)
        );
    }

    #[test]
    fn trailing_bytes_are_invalid_input() {
        let blobs = vec![("data".to_owned(), Buffer::from_vec(vec![0xc0, 0xc0]))];
        let meta = ArtifactMeta {
            obj_type: "null".into(),
            encoding: MSGPACK.into(),
            encoding_version: 1,
            info: vec![],
            blobs: vec![],
        };
        let error = Fallback::default()
            .deserialize(&meta, &blobs)
            .expect_err("refused");
        assert_eq!(error, invalid("1 trailing bytes after the msgpack value"));
    }

    #[test]
    fn the_deepest_value_accepted_on_save_loads_back() {
        let mut value = Value::String("leaf".into());
        while is_plain(&Value::List(vec![value.clone()]), 0) {
            value = Value::List(vec![value]);
        }
        assert_eq!(round_trip(&value), value);
        assert!(!is_plain(&Value::List(vec![value]), 0));
    }
}
