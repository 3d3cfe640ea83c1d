//! The values a plugin sees and returns.
//!
//! - [`ValueRef`] is a zero-copy view of a value the host lends for one call.
//!   Reading it never allocates.
//! - [`Value`] is what `deserialize` returns. Its byte and text payloads are
//!   `Cow`s, so a tensor can point straight into the blob the host passed in
//!   (zero-copy: the host keeps the blob alive while the value lives).
//! - [`AbiTree`] turns a value into the fixed-layout [`AbiValue`] nodes; the
//!   SDK and the host's loader use it, plugin authors do not.
//!
//! Decision: a kind this SDK does not know (added in a later interface minor)
//! reads as [`ValueRef::Unknown`]; the SDK declines such a value before the
//! plugin is asked, so plugin code never has to handle it.

use std::borrow::Cow;
use std::fmt;

use abi_stable::std_types::{RSlice, RStr};

use crate::abi::{AbiKind, AbiStrPair, AbiValue, FLAG_HAS_MODULE};
use crate::arrow::ArrowBatch;
use crate::kinds::Kind;

/// A borrowed view of a value lent by the host.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum ValueRef<'a> {
    /// `null`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int`.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `string`.
    String(&'a str),
    /// `bytes`.
    Bytes(&'a [u8]),
    /// `list`.
    List(ListRef<'a>),
    /// `map`.
    Map(MapRef<'a>),
    /// `tensor`.
    Tensor(TensorRef<'a>),
    /// `tensor_map`.
    TensorMap(TensorMapRef<'a>),
    /// `arrow`.
    Arrow(ArrowRef<'a>),
    /// `class_source`.
    ClassSource(ClassSourceRef<'a>),
    /// A kind added after this SDK was built; its wire tag.
    Unknown(u32),
}

impl<'a> ValueRef<'a> {
    /// Reads an ABI node.
    pub fn from_abi(value: &'a AbiValue<'a>) -> ValueRef<'a> {
        let Some(kind) = Kind::from_tag(value.kind.0) else {
            return ValueRef::Unknown(value.kind.0);
        };
        match kind {
            Kind::Null => ValueRef::Null,
            Kind::Bool => ValueRef::Bool(value.scalar != 0),
            Kind::Int => ValueRef::Int(value.scalar as i64),
            Kind::Float => ValueRef::Float(f64::from_bits(value.scalar)),
            Kind::String => ValueRef::String(value.text.as_str()),
            Kind::Bytes => ValueRef::Bytes(value.bytes.as_slice()),
            Kind::List => ValueRef::List(ListRef(value)),
            Kind::Map => ValueRef::Map(MapRef(value)),
            Kind::Tensor => ValueRef::Tensor(TensorRef(value)),
            Kind::TensorMap => ValueRef::TensorMap(TensorMapRef(value)),
            Kind::Arrow => ValueRef::Arrow(ArrowRef(value)),
            Kind::ClassSource => ValueRef::ClassSource(ClassSourceRef(value)),
        }
    }

    /// The value's kind, or `None` for [`ValueRef::Unknown`].
    pub fn kind(&self) -> Option<Kind> {
        Some(match self {
            ValueRef::Null => Kind::Null,
            ValueRef::Bool(_) => Kind::Bool,
            ValueRef::Int(_) => Kind::Int,
            ValueRef::Float(_) => Kind::Float,
            ValueRef::String(_) => Kind::String,
            ValueRef::Bytes(_) => Kind::Bytes,
            ValueRef::List(_) => Kind::List,
            ValueRef::Map(_) => Kind::Map,
            ValueRef::Tensor(_) => Kind::Tensor,
            ValueRef::TensorMap(_) => Kind::TensorMap,
            ValueRef::Arrow(_) => Kind::Arrow,
            ValueRef::ClassSource(_) => Kind::ClassSource,
            ValueRef::Unknown(_) => return None,
        })
    }
}

impl fmt::Debug for ValueRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueRef::Null => f.write_str("Null"),
            ValueRef::Bool(b) => write!(f, "Bool({b})"),
            ValueRef::Int(i) => write!(f, "Int({i})"),
            ValueRef::Float(x) => write!(f, "Float({x})"),
            ValueRef::String(s) => write!(f, "String({s:?})"),
            ValueRef::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            ValueRef::List(l) => f.debug_list().entries(l.iter()).finish(),
            ValueRef::Map(m) => f.debug_map().entries(m.iter()).finish(),
            ValueRef::Tensor(t) => write!(f, "Tensor({} {:?})", t.dtype(), t.shape()),
            ValueRef::TensorMap(m) => write!(f, "TensorMap({} tensors)", m.len()),
            ValueRef::Arrow(a) => write!(f, "Arrow({} batches)", a.len()),
            ValueRef::ClassSource(c) => write!(f, "ClassSource({})", c.qualname()),
            ValueRef::Unknown(tag) => write!(f, "Unknown(tag {tag})"),
        }
    }
}

/// A borrowed `list`.
#[derive(Clone, Copy)]
pub struct ListRef<'a>(&'a AbiValue<'a>);

impl<'a> ListRef<'a> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.0.items.len()
    }
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.items.is_empty()
    }
    /// The items in order.
    pub fn iter(&self) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        self.0.items.as_slice().iter().map(ValueRef::from_abi)
    }
}

/// A borrowed `map` (insertion order kept).
#[derive(Clone, Copy)]
pub struct MapRef<'a>(&'a AbiValue<'a>);

impl<'a> MapRef<'a> {
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.items.len().min(self.0.keys.len())
    }
    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let keys = self.0.keys.as_slice().iter().map(|k| k.as_str());
        keys.zip(self.0.items.as_slice().iter().map(ValueRef::from_abi))
    }
}

/// A borrowed `tensor`.
#[derive(Clone, Copy)]
pub struct TensorRef<'a>(&'a AbiValue<'a>);

impl<'a> TensorRef<'a> {
    /// The dtype, as safetensors names it (`F32`, `BF16`, …).
    pub fn dtype(&self) -> &'a str {
        self.0.text.as_str()
    }
    /// The shape; empty for a 0-d scalar.
    pub fn shape(&self) -> &'a [u64] {
        self.0.dims.as_slice()
    }
    /// The little-endian data, row-major.
    pub fn data(&self) -> &'a [u8] {
        self.0.bytes.as_slice()
    }
}

/// A borrowed `tensor_map`.
#[derive(Clone, Copy)]
pub struct TensorMapRef<'a>(&'a AbiValue<'a>);

impl<'a> TensorMapRef<'a> {
    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.0.items.len().min(self.0.keys.len())
    }
    /// Whether the map holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `(name, tensor)` pairs in order. A non-tensor entry (a host bug) is
    /// skipped rather than misread.
    pub fn tensors(&self) -> impl Iterator<Item = (&'a str, TensorRef<'a>)> + 'a {
        let keys = self.0.keys.as_slice().iter().map(|k| k.as_str());
        keys.zip(self.0.items.as_slice().iter())
            .filter(|(_, v)| v.kind == AbiKind(Kind::Tensor.tag()))
            .map(|(k, v)| (k, TensorRef(v)))
    }
    /// The string metadata (`__metadata__` in safetensors).
    pub fn metadata(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .pairs
            .as_slice()
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
    }
}

/// Borrowed `arrow` batches. A plugin may [`take`](ArrowRef::take) them
/// (becoming responsible for releasing them); the host releases the rest.
#[derive(Clone, Copy)]
pub struct ArrowRef<'a>(&'a AbiValue<'a>);

impl<'a> ArrowRef<'a> {
    /// Number of batches.
    pub fn len(&self) -> usize {
        self.0.arrow_len
    }
    /// Whether there is no batch.
    pub fn is_empty(&self) -> bool {
        self.0.arrow_len == 0
    }
    /// The batches, still owned by the host.
    pub fn batches(&self) -> &'a [ArrowBatch] {
        if self.0.arrow.is_null() || self.0.arrow_len == 0 {
            return &[];
        }
        // SAFETY: the host lends `arrow_len` initialised batches at `arrow`
        // for the duration of the call ('a).
        unsafe { std::slice::from_raw_parts(self.0.arrow, self.0.arrow_len) }
    }
    /// Moves every batch out of the host's hands into the caller's. Batches
    /// already taken come back released.
    pub fn take(&self) -> Vec<ArrowBatch> {
        (0..self.len())
            .map(|i| {
                // SAFETY: the host lends `arrow_len` batches at `arrow` with
                // permission to move them out (abi docs); each index is
                // visited once here and a moved batch is left released.
                unsafe { (*self.0.arrow.add(i)).take() }
            })
            .collect()
    }
}

/// A borrowed `class_source`.
#[derive(Clone, Copy)]
pub struct ClassSourceRef<'a>(&'a AbiValue<'a>);

impl<'a> ClassSourceRef<'a> {
    /// Dotted qualified name (`Outer.Inner`).
    pub fn qualname(&self) -> &'a str {
        self.0.text.as_str()
    }
    /// The defining module, if known.
    pub fn module(&self) -> Option<&'a str> {
        (self.0.flags & FLAG_HAS_MODULE != 0).then(|| self.0.text2.as_str())
    }
    /// The source bytes as lent (the host always lends UTF-8).
    pub fn source_bytes(&self) -> &'a [u8] {
        self.0.bytes.as_slice()
    }
}

/// An owned (or blob-borrowing) value, returned by `deserialize`.
#[derive(Debug)]
#[non_exhaustive]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `bool`.
    Bool(bool),
    /// `int`.
    Int(i64),
    /// `float`.
    Float(f64),
    /// `string`.
    String(Cow<'a, str>),
    /// `bytes`.
    Bytes(Cow<'a, [u8]>),
    /// `list`.
    List(Vec<Value<'a>>),
    /// `map`, insertion order kept.
    Map(Vec<(Cow<'a, str>, Value<'a>)>),
    /// `tensor`.
    Tensor(Tensor<'a>),
    /// `tensor_map`.
    TensorMap(TensorMap<'a>),
    /// `arrow`: batches handed to the host.
    Arrow(Vec<ArrowBatch>),
    /// `class_source`.
    ClassSource(ClassSource<'a>),
}

/// A tensor whose data may borrow from a blob.
#[derive(Debug, Clone)]
pub struct Tensor<'a> {
    /// safetensors dtype name.
    pub dtype: Cow<'a, str>,
    /// Shape; empty for a 0-d scalar.
    pub shape: Vec<u64>,
    /// Little-endian row-major data.
    pub data: Cow<'a, [u8]>,
}

/// Named tensors plus string metadata.
#[derive(Debug, Clone, Default)]
pub struct TensorMap<'a> {
    /// `(name, tensor)` in order.
    pub tensors: Vec<(Cow<'a, str>, Tensor<'a>)>,
    /// String metadata.
    pub metadata: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

/// A Python class as source.
#[derive(Debug, Clone)]
pub struct ClassSource<'a> {
    /// Dotted qualified name.
    pub qualname: Cow<'a, str>,
    /// Defining module, if known.
    pub module: Option<Cow<'a, str>>,
    /// The source text, byte-exact.
    pub source: Cow<'a, str>,
}

/// Arena-backed ABI nodes built from borrowed parts. The nodes point into the
/// arena and into whatever `'a` borrows, so the tree must outlive every use of
/// [`AbiTree::root`]; the borrow checker enforces that for callers.
#[derive(Default)]
pub struct AbiTree<'a> {
    values: Vec<Box<[AbiValue<'a>]>>,
    keys: Vec<Box<[RStr<'a>]>>,
    pairs: Vec<Box<[AbiStrPair<'a>]>>,
    root: Option<AbiValue<'a>>,
}

// SAFETY: the tree only holds shared borrows of `Sync` data and boxes it owns;
// the raw `arrow` pointer in a node is only dereferenced by the receiver of a
// call made by the tree's owner.
unsafe impl Send for AbiTree<'_> {}

impl<'a> AbiTree<'a> {
    /// An empty tree; set its root with [`AbiTree::set_root`].
    pub fn new() -> Self {
        AbiTree::default()
    }

    /// The root node (a `null` until one is set).
    pub fn root(&self) -> &AbiValue<'a> {
        const NULL: AbiValue<'static> = AbiValue::empty(AbiKind(1));
        self.root.as_ref().unwrap_or(&NULL)
    }

    /// Sets the root node.
    pub fn set_root(&mut self, root: AbiValue<'a>) {
        self.root = Some(root);
    }

    /// A scalar node (`null`, `bool`, `int`, `float`).
    pub fn scalar(kind: Kind, bits: u64) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(kind.tag()));
        node.scalar = bits;
        node
    }

    /// A node whose only payload is text (`string`).
    pub fn text(kind: Kind, text: &'a str) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(kind.tag()));
        node.text = RStr::from_str(text);
        node
    }

    /// A node whose only payload is bytes (`bytes`).
    pub fn bytes(kind: Kind, bytes: &'a [u8]) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(kind.tag()));
        node.bytes = RSlice::from_slice(bytes);
        node
    }

    /// A `tensor` node.
    pub fn tensor(dtype: &'a str, shape: &'a [u64], data: &'a [u8]) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(Kind::Tensor.tag()));
        node.text = RStr::from_str(dtype);
        node.dims = RSlice::from_slice(shape);
        node.bytes = RSlice::from_slice(data);
        node
    }

    /// A `class_source` node.
    pub fn class_source(
        qualname: &'a str,
        module: Option<&'a str>,
        source: &'a str,
    ) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(Kind::ClassSource.tag()));
        node.text = RStr::from_str(qualname);
        if let Some(module) = module {
            node.text2 = RStr::from_str(module);
            node.flags |= FLAG_HAS_MODULE;
        }
        node.bytes = RSlice::from_slice(source.as_bytes());
        node
    }

    /// An `arrow` node lending `batches` (which the receiver may move out of).
    ///
    /// # Safety
    /// - `batches` points to `len` valid batches that stay alive, and are not
    ///   otherwise accessed, for as long as the node is in use;
    /// - after the node's last use the caller drops the batches (releasing
    ///   whatever the receiver left).
    pub unsafe fn arrow(batches: *mut ArrowBatch, len: usize) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(Kind::Arrow.tag()));
        node.arrow = batches;
        node.arrow_len = len;
        node
    }

    /// A `list` node owning `items` in the arena.
    pub fn list(&mut self, items: Vec<AbiValue<'a>>) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(Kind::List.tag()));
        node.items = self.store_values(items);
        node
    }

    /// A `map` (or `tensor_map`, with `kind` and `metadata`) node.
    pub fn keyed(
        &mut self,
        kind: Kind,
        keys: Vec<&'a str>,
        items: Vec<AbiValue<'a>>,
        metadata: Vec<(&'a str, &'a str)>,
    ) -> AbiValue<'a> {
        let mut node = AbiValue::empty(AbiKind(kind.tag()));
        let keys: Box<[RStr<'a>]> = keys.into_iter().map(RStr::from_str).collect();
        node.keys = self.store(keys, |tree| &mut tree.keys);
        node.items = self.store_values(items);
        let pairs: Box<[AbiStrPair<'a>]> = metadata
            .into_iter()
            .map(|(key, value)| AbiStrPair {
                key: RStr::from_str(key),
                value: RStr::from_str(value),
            })
            .collect();
        node.pairs = self.store(pairs, |tree| &mut tree.pairs);
        node
    }

    fn store_values(&mut self, items: Vec<AbiValue<'a>>) -> RSlice<'a, AbiValue<'a>> {
        self.store(items.into_boxed_slice(), |tree| &mut tree.values)
    }

    fn store<T>(
        &mut self,
        boxed: Box<[T]>,
        field: impl FnOnce(&mut Self) -> &mut Vec<Box<[T]>>,
    ) -> RSlice<'a, T> {
        // SAFETY: the boxed slice's heap allocation never moves or drops while
        // the tree lives (boxes are only pushed, never removed), and every node
        // built here is only reachable through the tree, so the 'a lifetime
        // handed out is never observed past the tree's own life.
        let slice = unsafe { RSlice::from_raw_parts(boxed.as_ptr(), boxed.len()) };
        field(self).push(boxed);
        slice
    }
}

impl<'v> Value<'v> {
    /// The same value with every borrowed payload copied.
    pub fn into_owned(self) -> Value<'static> {
        let owned = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        let tensor = |t: Tensor<'_>| Tensor {
            dtype: owned(t.dtype),
            shape: t.shape,
            data: Cow::Owned(t.data.into_owned()),
        };
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(x) => Value::Float(x),
            Value::String(s) => Value::String(owned(s)),
            Value::Bytes(b) => Value::Bytes(Cow::Owned(b.into_owned())),
            Value::List(items) => Value::List(items.into_iter().map(Value::into_owned).collect()),
            Value::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (owned(k), v.into_owned()))
                    .collect(),
            ),
            Value::Tensor(t) => Value::Tensor(tensor(t)),
            Value::TensorMap(m) => Value::TensorMap(TensorMap {
                tensors: m
                    .tensors
                    .into_iter()
                    .map(|(n, t)| (owned(n), tensor(t)))
                    .collect(),
                metadata: m
                    .metadata
                    .into_iter()
                    .map(|(k, v)| (owned(k), owned(v)))
                    .collect(),
            }),
            Value::Arrow(batches) => Value::Arrow(batches),
            Value::ClassSource(c) => Value::ClassSource(ClassSource {
                qualname: owned(c.qualname),
                module: c.module.map(owned),
                source: owned(c.source),
            }),
        }
    }

    /// Builds ABI nodes for this value into `tree`, borrowing from `self`.
    pub fn to_abi<'a>(&'a mut self, tree: &mut AbiTree<'a>) -> AbiValue<'a> {
        match self {
            Value::Null => AbiTree::scalar(Kind::Null, 0),
            Value::Bool(b) => AbiTree::scalar(Kind::Bool, u64::from(*b)),
            Value::Int(i) => AbiTree::scalar(Kind::Int, *i as u64),
            Value::Float(x) => AbiTree::scalar(Kind::Float, x.to_bits()),
            Value::String(s) => AbiTree::text(Kind::String, s),
            Value::Bytes(b) => AbiTree::bytes(Kind::Bytes, b),
            Value::List(items) => {
                let nodes = items.iter_mut().map(|item| item.to_abi(tree)).collect();
                tree.list(nodes)
            }
            Value::Map(entries) => {
                let mut keys = Vec::with_capacity(entries.len());
                let mut nodes = Vec::with_capacity(entries.len());
                for (key, item) in entries.iter_mut() {
                    keys.push(&**key);
                    nodes.push(item.to_abi(tree));
                }
                tree.keyed(Kind::Map, keys, nodes, Vec::new())
            }
            Value::Tensor(t) => AbiTree::tensor(&t.dtype, &t.shape, &t.data),
            Value::TensorMap(map) => {
                let keys = map.tensors.iter().map(|(name, _)| &**name).collect();
                let nodes = map
                    .tensors
                    .iter()
                    .map(|(_, t)| AbiTree::tensor(&t.dtype, &t.shape, &t.data))
                    .collect();
                let metadata = map.metadata.iter().map(|(k, v)| (&**k, &**v)).collect();
                tree.keyed(Kind::TensorMap, keys, nodes, metadata)
            }
            Value::Arrow(batches) => {
                // SAFETY: the batches live in `self`, which the caller keeps
                // (mutably borrowed, so untouched) for as long as the node is
                // used, and drops afterwards, releasing what was left.
                unsafe { AbiTree::arrow(batches.as_mut_ptr(), batches.len()) }
            }
            Value::ClassSource(c) => {
                AbiTree::class_source(&c.qualname, c.module.as_deref(), &c.source)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_value_reads_back_through_abi_nodes() {
        let mut value = Value::Map(vec![
            ("n".into(), Value::Int(-7)),
            (
                "xs".into(),
                Value::List(vec![Value::Float(1.5), Value::String("hi".into())]),
            ),
            (
                "t".into(),
                Value::Tensor(Tensor {
                    dtype: "F32".into(),
                    shape: vec![1],
                    data: Cow::Borrowed(&[0, 0, 128, 63]),
                }),
            ),
        ]);
        let mut tree = AbiTree::new();
        let root = value.to_abi(&mut tree);
        tree.set_root(root);
        let ValueRef::Map(map) = ValueRef::from_abi(tree.root()) else {
            panic!("expected a map");
        };
        let entries: Vec<_> = map.iter().collect();
        assert_eq!(entries.len(), 3);
        assert!(matches!(entries[0], ("n", ValueRef::Int(-7))));
        let ValueRef::List(list) = entries[1].1 else {
            panic!("expected a list");
        };
        let items: Vec<_> = list.iter().collect();
        assert!(matches!(items[0], ValueRef::Float(x) if x == 1.5));
        assert!(matches!(items[1], ValueRef::String("hi")));
        let ValueRef::Tensor(t) = entries[2].1 else {
            panic!("expected a tensor");
        };
        assert_eq!(
            (t.dtype(), t.shape(), t.data()),
            ("F32", &[1u64][..], &[0, 0, 128, 63][..])
        );
    }

    #[test]
    fn unknown_tag_reads_as_unknown() {
        let node = AbiValue::empty(AbiKind(999));
        assert!(matches!(ValueRef::from_abi(&node), ValueRef::Unknown(999)));
    }
}
