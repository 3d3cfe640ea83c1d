//! Converting between `stowage::Value` and the ABI's fixed-layout nodes.
//!
//! Into a plugin: [`PreparedValue`] borrows every payload from the host value
//! (no copy), builds the node arrays once per dispatch, and re-exports Arrow
//! batches fresh before each call (the callee may take them; leftovers are
//! released when replaced or dropped).
//!
//! Out of a plugin: [`value_from_owned`] copies only strings; tensor and byte
//! payloads become [`Buffer`]s, and Arrow batches are re-exported with
//! [`ArrowBatch::keeping`], both holding the plugin's allocation (and the
//! blobs it may point into) alive, so a tensor or table loaded from a
//! memory-mapped blob is never copied.

use std::ffi::c_void;
use std::sync::Arc;

use stowage_plugin_api::abi::{AbiOwnedValue, AbiValue, FLAG_HAS_MODULE};
use stowage_plugin_api::{AbiTree, ArrowBatch, Kind};

use crate::value::{ArrowTable, Buffer, ClassSource, Tensor, TensorMap, Value};

/// A host value in ABI form, reusable across the calls of one dispatch.
pub struct PreparedValue<'v> {
    tree: AbiTree<'v>,
    arrow: Vec<ArrowSlot<'v>>,
    calls: usize,
}

/// Fresh exports of one Arrow table, lent to the current call.
struct ArrowSlot<'v> {
    table: &'v ArrowTable,
    lent: Box<[ArrowBatch]>,
}

impl<'v> PreparedValue<'v> {
    /// Builds the nodes for `value`.
    pub fn new(value: &'v Value) -> Self {
        let mut tree = AbiTree::new();
        let mut arrow = Vec::new();
        let root = build(value, &mut tree, &mut arrow);
        tree.set_root(root);
        PreparedValue {
            tree,
            arrow,
            calls: 0,
        }
    }

    /// The root node for the next call, with fresh Arrow exports.
    pub fn for_call(&mut self) -> &AbiValue<'v> {
        if self.calls > 0 {
            for slot in &mut self.arrow {
                for (lent, original) in slot.lent.iter_mut().zip(slot.table.batches()) {
                    // Replacing drops the previous export, releasing whatever
                    // the previous callee did not take.
                    *lent = ArrowBatch::share(original);
                }
            }
        }
        self.calls += 1;
        self.tree.root()
    }
}

fn build<'v>(
    value: &'v Value,
    tree: &mut AbiTree<'v>,
    arrow: &mut Vec<ArrowSlot<'v>>,
) -> AbiValue<'v> {
    match value {
        Value::Null => AbiTree::scalar(Kind::Null, 0),
        Value::Bool(b) => AbiTree::scalar(Kind::Bool, u64::from(*b)),
        Value::Int(i) => AbiTree::scalar(Kind::Int, *i as u64),
        Value::Float(x) => AbiTree::scalar(Kind::Float, x.to_bits()),
        Value::String(s) => AbiTree::text(Kind::String, s),
        Value::Bytes(b) => AbiTree::bytes(Kind::Bytes, b),
        Value::List(items) => {
            let nodes = items.iter().map(|item| build(item, tree, arrow)).collect();
            tree.list(nodes)
        }
        Value::Map(entries) => {
            let keys = entries.iter().map(|(k, _)| k.as_str()).collect();
            let nodes = entries.iter().map(|(_, v)| build(v, tree, arrow)).collect();
            tree.keyed(Kind::Map, keys, nodes, Vec::new())
        }
        Value::Tensor(t) => AbiTree::tensor(&t.dtype, &t.shape, &t.data),
        Value::TensorMap(map) => {
            let keys = map.tensors.iter().map(|(name, _)| name.as_str()).collect();
            let nodes = map
                .tensors
                .iter()
                .map(|(_, t)| AbiTree::tensor(&t.dtype, &t.shape, &t.data))
                .collect();
            let metadata = map
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            tree.keyed(Kind::TensorMap, keys, nodes, metadata)
        }
        Value::Arrow(table) => {
            let mut lent: Box<[ArrowBatch]> = table.export().into_boxed_slice();
            let (ptr, len) = (lent.as_mut_ptr(), lent.len());
            arrow.push(ArrowSlot { table, lent });
            // SAFETY: the boxed batches live in `arrow` (part of the
            // PreparedValue that owns this node) and their heap address never
            // changes; they are replaced only between calls and dropped after
            // the last one, which releases whatever the callee left.
            unsafe { AbiTree::arrow(ptr, len) }
        }
        Value::ClassSource(c) => AbiTree::class_source(&c.qualname, c.module.as_deref(), &c.source),
    }
}

/// Keeps a plugin-owned value (and the blobs it may borrow) alive.
struct ForeignOwner {
    owner: *mut c_void,
    release: Option<unsafe extern "C" fn(*mut c_void)>,
    _inputs: Vec<Buffer>,
}

// SAFETY: the owner is opaque to the host and only passed back to the
// plugin's `release`, which the interface allows from any thread; the data it
// owns is immutable.
unsafe impl Send for ForeignOwner {}
// SAFETY: shared access never touches `owner`; see above.
unsafe impl Sync for ForeignOwner {}

impl Drop for ForeignOwner {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            // SAFETY: `owner` came with this `release` in an `AbiOwnedValue`
            // and is released exactly once (`take` above).
            unsafe { release(self.owner) };
        }
    }
}

/// A value a plugin returned that this host cannot hold. The caller reports
/// it as the plugin's `Internal` error; this leaf names no serializer type
/// (the serializer module imports [`PreparedValue`] from here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) String);

/// Converts a value returned by a plugin, keeping `inputs` (the blobs it was
/// given) alive for as long as any payload of the result.
pub(super) fn value_from_owned(
    owned: AbiOwnedValue,
    inputs: Vec<Buffer>,
) -> Result<Value, Malformed> {
    let root = owned.value;
    let owner: Arc<dyn Send + Sync> = Arc::new(ForeignOwner {
        owner: owned.owner,
        release: owned.release,
        _inputs: inputs,
    });
    read(&root, &owner)
}

fn read(node: &AbiValue<'_>, owner: &Arc<dyn Send + Sync>) -> Result<Value, Malformed> {
    let Some(kind) = Kind::from_tag(node.kind.0) else {
        return Err(Malformed(format!(
            "plugin returned unknown value kind tag {}",
            node.kind.0
        )));
    };
    let buffer = |bytes: &[u8]| {
        // SAFETY: the plugin lends these bytes until `release`, which runs
        // only when `owner` (held by the buffer) is dropped.
        unsafe { Buffer::from_raw_parts(Arc::clone(owner), bytes.as_ptr(), bytes.len()) }
    };
    let tensor = |node: &AbiValue<'_>| Tensor {
        dtype: node.text.to_string(),
        shape: node.dims.to_vec(),
        data: buffer(node.bytes.as_slice()),
    };
    Ok(match kind {
        Kind::Null => Value::Null,
        Kind::Bool => Value::Bool(node.scalar != 0),
        Kind::Int => Value::Int(node.scalar as i64),
        Kind::Float => Value::Float(f64::from_bits(node.scalar)),
        Kind::String => Value::String(node.text.to_string()),
        Kind::Bytes => Value::Bytes(buffer(node.bytes.as_slice())),
        Kind::List => Value::List(
            node.items
                .iter()
                .map(|item| read(item, owner))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Map => Value::Map(
            node.keys
                .iter()
                .zip(node.items.iter())
                .map(|(k, v)| Ok((k.to_string(), read(v, owner)?)))
                .collect::<Result<_, Malformed>>()?,
        ),
        Kind::Tensor => Value::Tensor(tensor(node)),
        Kind::TensorMap => Value::TensorMap(TensorMap {
            tensors: node
                .keys
                .iter()
                .zip(node.items.iter())
                .map(|(k, t)| (k.to_string(), tensor(t)))
                .collect(),
            metadata: node
                .pairs
                .iter()
                .map(|p| (p.key.to_string(), p.value.to_string()))
                .collect(),
        }),
        Kind::Arrow => {
            let mut batches = Vec::with_capacity(node.arrow_len);
            for i in 0..node.arrow_len {
                // SAFETY: the plugin hands over `arrow_len` batches at
                // `arrow` with permission to move them out; each is moved
                // once and left released for the owner's drop.
                let batch = unsafe { (*node.arrow.add(i)).take() };
                if batch.schema.release.is_none() || batch.array.release.is_none() {
                    return Err(Malformed(format!(
                        "plugin returned arrow batch {i} already released"
                    )));
                }
                // The batch may point into the blobs the plugin was lent
                // (a zero-copy load from the mapped file): every node keeps
                // them alive, even one a consumer moves out on its own.
                batches.push(batch.keeping(Arc::clone(owner)));
            }
            Value::Arrow(ArrowTable::new(batches))
        }
        Kind::ClassSource => Value::ClassSource(ClassSource {
            qualname: node.text.to_string(),
            module: (node.flags & FLAG_HAS_MODULE != 0).then(|| node.text2.to_string()),
            source: String::from_utf8(node.bytes.to_vec())
                .map_err(|_| Malformed("plugin returned class source that is not UTF-8".into()))?,
        }),
        _ => {
            return Err(Malformed(format!(
                "plugin returned a {kind} value this host cannot hold"
            )))
        }
    })
}
