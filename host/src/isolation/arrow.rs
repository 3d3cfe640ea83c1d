//! Arrow batches across the runner boundary as their C Data layout: read a
//! batch's C structs into a plain description whose buffers are byte slices
//! (so `wire.rs` can place them in shared memory like any payload), and
//! rebuild C structs from a decoded description whose buffers are views
//! into that shared memory (zero-copy, kept alive by the rebuilt batch).
//! No arrow-rs: the buffer sizes come from the format strings of the Arrow
//! C Data Interface.
//!
//! Invariant: a description decoded from a runner is untrusted: before any
//! C struct is built, every buffer is checked to be at least as long as the
//! node's type, length and offset need, offsets are checked to be
//! non-decreasing and inside their data (or child), children must cover
//! their parent, and the metadata blob must parse; only then do pointers
//! into it leave this module.
//!
//! Decision: every format of the C Data Interface's table is carried
//! (including views, list views, unions and run-end encoding); an unknown
//! format fails the call as unsupported, naming it. Union type ids are
//! checked against the declared ones and dense offsets against their
//! child; run-end arrays are checked for their two children (the values of
//! the run ends themselves are left to the consumer's own validation).

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use stowage_plugin_api::arrow::{ArrowArray, ArrowSchema};
use stowage_plugin_api::ArrowBatch;

use crate::value::Buffer;

/// One schema node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SchemaDesc {
    /// Format string.
    pub format: String,
    /// Field name.
    pub name: Option<String>,
    /// Raw C Data metadata blob.
    pub metadata: Option<Vec<u8>>,
    /// Flags.
    pub flags: i64,
    /// Children.
    pub children: Vec<SchemaDesc>,
    /// Dictionary value type.
    pub dictionary: Option<Box<SchemaDesc>>,
}

/// One array node; `B` is `&[u8]` when read, [`Buffer`] when decoded.
#[derive(Debug, Clone)]
pub(crate) struct ArrayDesc<B> {
    /// Length.
    pub length: i64,
    /// Null count.
    pub null_count: i64,
    /// Offset.
    pub offset: i64,
    /// Buffers (`None`: a null pointer, allowed for validity).
    pub buffers: Vec<Option<B>>,
    /// Children.
    pub children: Vec<ArrayDesc<B>>,
    /// Dictionary values.
    pub dictionary: Option<Box<ArrayDesc<B>>>,
}

fn unsupported(format: &str) -> String {
    format!("arrow type {format:?} cannot be passed to an isolated plugin")
}

/// Bytes of a fixed-width value of `format`, if it is one.
fn fixed_width(format: &str) -> Option<usize> {
    Some(match format {
        "c" | "C" => 1,
        "s" | "S" | "e" => 2,
        "i" | "I" | "f" | "tdD" | "tts" | "ttm" | "tiM" => 4,
        "l" | "L" | "g" | "tdm" | "ttu" | "ttn" | "tDs" | "tDm" | "tDu" | "tDn" | "tiD" => 8,
        "tin" => 16,
        _ if format.starts_with("ts") && format.len() >= 4 => 8,
        _ if format.starts_with("w:") => format[2..].parse().ok()?,
        _ if format.starts_with("d:") => {
            let bits = format[2..].split(',').nth(2).unwrap_or("128");
            bits.parse::<usize>().ok()? / 8
        }
        _ => return None,
    })
}

/// What the buffers of a node need, in order: `Fixed(bytes)`, or offsets
/// whose last value sizes the next buffer (`Offsets32/64`).
enum Need {
    Fixed(usize),
    Offsets32(usize),
    Offsets64(usize),
    /// Sized by the previous offsets buffer's value at `n`.
    Data,
}

/// The buffer needs of a node of `format` with `n = offset + length` slots.
fn needs(format: &str, n: usize, n_buffers: usize) -> Result<Vec<Need>, String> {
    let bits = n.div_ceil(8);
    let checked = |w: usize| {
        n.checked_mul(w)
            .ok_or_else(|| "arrow length overflows".to_owned())
    };
    Ok(match format {
        "n" => vec![],
        "b" => vec![Need::Fixed(bits), Need::Fixed(bits)],
        "u" | "z" => vec![Need::Fixed(bits), Need::Offsets32(n + 1), Need::Data],
        "U" | "Z" => vec![Need::Fixed(bits), Need::Offsets64(n + 1), Need::Data],
        "vu" | "vz" => {
            // Views, then variadic data buffers, then their sizes (int64 each).
            let variadic = n_buffers
                .checked_sub(3)
                .ok_or_else(|| unsupported(format))?;
            let mut v = vec![Need::Fixed(bits), Need::Fixed(checked(16)?)];
            v.extend((0..variadic).map(|_| Need::Data));
            v.push(Need::Fixed(variadic * 8));
            v
        }
        "+l" | "+m" => vec![Need::Fixed(bits), Need::Offsets32(n + 1)],
        "+L" => vec![Need::Fixed(bits), Need::Offsets64(n + 1)],
        "+vl" => vec![
            Need::Fixed(bits),
            Need::Fixed(checked(4)?),
            Need::Fixed(checked(4)?),
        ],
        "+vL" => vec![
            Need::Fixed(bits),
            Need::Fixed(checked(8)?),
            Need::Fixed(checked(8)?),
        ],
        "+s" => vec![Need::Fixed(bits)],
        "+r" => vec![],
        _ if format.starts_with("+ud:") => vec![Need::Fixed(n), Need::Fixed(checked(4)?)],
        _ if format.starts_with("+us:") => vec![Need::Fixed(n)],
        _ if format.starts_with("+w:") => vec![Need::Fixed(bits)],
        _ => match fixed_width(format) {
            Some(w) => vec![Need::Fixed(bits), Need::Fixed(checked(w)?)],
            None => return Err(unsupported(format)),
        },
    })
}

/// Reads the last needed offset of an offsets buffer.
fn last_offset(bytes: &[u8], n: usize, wide: bool) -> Result<usize, String> {
    let value = if wide {
        let raw = bytes
            .get((n - 1) * 8..n * 8)
            .ok_or("arrow offsets too short")?;
        i64::from_ne_bytes(raw.try_into().map_err(|_| "arrow offsets")?)
    } else {
        let raw = bytes
            .get((n - 1) * 4..n * 4)
            .ok_or("arrow offsets too short")?;
        i64::from(i32::from_ne_bytes(
            raw.try_into().map_err(|_| "arrow offsets")?,
        ))
    };
    usize::try_from(value).map_err(|_| "negative arrow offset".to_owned())
}

/// Checks offsets `0..n` are non-decreasing and non-negative.
fn check_offsets(bytes: &[u8], n: usize, wide: bool) -> Result<(), String> {
    let width = if wide { 8 } else { 4 };
    let mut previous = i64::MIN;
    for chunk in bytes
        .get(..n * width)
        .ok_or("arrow offsets too short")?
        .chunks_exact(width)
    {
        let value = if wide {
            i64::from_ne_bytes(chunk.try_into().map_err(|_| "arrow offsets")?)
        } else {
            i64::from(i32::from_ne_bytes(
                chunk.try_into().map_err(|_| "arrow offsets")?,
            ))
        };
        if value < 0 || value < previous {
            return Err("arrow offsets decrease or are negative".to_owned());
        }
        previous = value;
    }
    Ok(())
}

/// The size each buffer of a node must have, given the buffers at hand
/// (offsets are read from them); checks offsets when `validate`. Also
/// returns the length the first child must cover (lists: the last offset).
fn sizes(
    format: &str,
    length: i64,
    offset: i64,
    buffers: &[Option<&[u8]>],
    validate: bool,
) -> Result<(Vec<usize>, Option<usize>), String> {
    let (length, offset) = (
        usize::try_from(length).map_err(|_| "negative arrow length")?,
        usize::try_from(offset).map_err(|_| "negative arrow offset")?,
    );
    let n = length.checked_add(offset).ok_or("arrow length overflows")?;
    let needs = needs(format, n, buffers.len())?;
    if needs.len() != buffers.len() {
        return Err(format!(
            "arrow {format:?} array has {} buffers, expected {}",
            buffers.len(),
            needs.len()
        ));
    }
    let mut out = Vec::with_capacity(needs.len());
    let mut child_len = None;
    let mut pending: Option<usize> = None;
    for (i, need) in needs.iter().enumerate() {
        let have = buffers[i];
        let size = match need {
            Need::Fixed(size) => *size,
            Need::Offsets32(count) | Need::Offsets64(count) => {
                let wide = matches!(need, Need::Offsets64(_));
                let size = count * if wide { 8 } else { 4 };
                if let Some(bytes) = have.filter(|_| *count > 0) {
                    if bytes.len() < size {
                        return Err(format!("arrow {format:?} offsets buffer is too short"));
                    }
                    if validate {
                        check_offsets(bytes, *count, wide)?;
                    }
                    let last = last_offset(bytes, *count, wide)?;
                    pending = Some(last);
                    child_len = Some(last);
                }
                size
            }
            Need::Data => match format {
                "vu" | "vz" => {
                    // Sized by the last buffer (int64 per variadic buffer).
                    let sizes = buffers.last().copied().flatten().unwrap_or_default();
                    let k = i - 2;
                    let raw = sizes
                        .get(k * 8..k * 8 + 8)
                        .ok_or("arrow view sizes too short")?;
                    usize::try_from(i64::from_ne_bytes(raw.try_into().map_err(|_| "sizes")?))
                        .map_err(|_| "negative arrow view buffer size")?
                }
                _ => pending.take().unwrap_or(0),
            },
        };
        let union = format.starts_with("+u");
        if i == 0 && have.is_none() && !union {
            out.push(0);
            continue;
        }
        if have.is_none() && size > 0 {
            return Err(format!("arrow {format:?} buffer {i} is missing"));
        }
        out.push(size);
    }
    if child_len.is_none() {
        child_len = match format {
            "+s" => Some(n),
            _ if format.starts_with("+us:") => Some(n),
            _ if format.starts_with("+w:") => {
                let width: usize = format[3..].parse().map_err(|_| unsupported(format))?;
                Some(n.checked_mul(width).ok_or("arrow length overflows")?)
            }
            _ => None,
        };
    }
    Ok((out, child_len))
}

/// Length of a C Data metadata blob at `ptr` (native-endian int32 counts).
///
/// # Safety
/// `ptr` points at a well-formed metadata blob (a valid schema's).
unsafe fn metadata_len(ptr: *const c_char) -> usize {
    let read = |at: usize| -> i32 {
        // SAFETY: the caller guarantees a well-formed blob; `at` stays inside.
        unsafe { ptr::read_unaligned(ptr.add(at) as *const i32) }
    };
    let pairs = read(0).max(0) as usize;
    let mut at = 4;
    for _ in 0..pairs * 2 {
        at += 4 + read(at).max(0) as usize;
    }
    at
}

/// Parses a metadata blob from a runner; `Err` unless well formed.
fn check_metadata(blob: &[u8]) -> Result<(), String> {
    let bad = || "malformed arrow metadata".to_owned();
    let read = |at: usize| -> Result<usize, String> {
        let raw = blob.get(at..at + 4).ok_or_else(bad)?;
        usize::try_from(i32::from_ne_bytes(raw.try_into().map_err(|_| bad())?)).map_err(|_| bad())
    };
    let pairs = read(0)?;
    let mut at: usize = 4;
    for _ in 0..pairs.checked_mul(2).ok_or_else(bad)? {
        at = at.checked_add(4 + read(at)?).ok_or_else(bad)?;
        if at > blob.len() {
            return Err(bad());
        }
    }
    if at != blob.len() {
        return Err(bad());
    }
    Ok(())
}

/// Reads a schema node.
///
/// # Safety
/// `schema` is a valid, unreleased C schema.
unsafe fn read_schema(schema: &ArrowSchema) -> Result<SchemaDesc, String> {
    let text = |p: *const c_char| -> Option<String> {
        // SAFETY: non-null strings of a valid schema are NUL-terminated.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let format = text(schema.format).ok_or("arrow schema without a format")?;
    let metadata = (!schema.metadata.is_null()).then(|| {
        // SAFETY: a valid schema's metadata is a well-formed blob.
        let len = unsafe { metadata_len(schema.metadata) };
        // SAFETY: the blob is `len` bytes long.
        unsafe { std::slice::from_raw_parts(schema.metadata as *const u8, len) }.to_vec()
    });
    let mut children = Vec::new();
    for i in 0..usize::try_from(schema.n_children).unwrap_or(0) {
        // SAFETY: a valid schema has `n_children` valid child pointers.
        children.push(unsafe { read_schema(&**schema.children.add(i)) }?);
    }
    let dictionary = if schema.dictionary.is_null() {
        None
    } else {
        // SAFETY: a non-null dictionary of a valid schema is valid.
        Some(Box::new(unsafe { read_schema(&*schema.dictionary) }?))
    };
    Ok(SchemaDesc {
        format,
        name: text(schema.name),
        metadata,
        flags: schema.flags,
        children,
        dictionary,
    })
}

/// Reads an array node of type `schema`, its buffers as slices.
///
/// # Safety
/// `array` is a valid, unreleased C array of type `schema`, and stays
/// alive (and unchanged) for `'a`.
unsafe fn read_array<'a>(
    array: &'a ArrowArray,
    schema: &SchemaDesc,
) -> Result<ArrayDesc<&'a [u8]>, String> {
    let format = schema.format.as_str();
    let n_buffers = usize::try_from(array.n_buffers).unwrap_or(0);
    let pointers: Vec<*const u8> = (0..n_buffers)
        // SAFETY: a valid array has `n_buffers` buffer pointers.
        .map(|i| unsafe { *array.buffers.add(i) } as *const u8)
        .collect();
    let (length, offset) = (array.length, array.offset);
    let n = usize::try_from(length)
        .ok()
        .zip(usize::try_from(offset).ok())
        .and_then(|(l, o)| l.checked_add(o))
        .ok_or("arrow length or offset out of range")?;
    let needs = needs(format, n, n_buffers)?;
    if needs.len() != n_buffers {
        return Err(format!(
            "arrow {format:?} array has {n_buffers} buffers, expected {}",
            needs.len()
        ));
    }
    // Views: the last buffer holds the size of each variadic data buffer.
    let view_sizes: Vec<usize> = match (format, pointers.last()) {
        ("vu" | "vz", Some(last)) if !last.is_null() => (0..n_buffers - 3)
            .map(|k| {
                // SAFETY: a valid view array's last buffer holds one int64
                // per variadic buffer.
                let size = unsafe { ptr::read_unaligned((*last as *const i64).add(k)) };
                usize::try_from(size).unwrap_or(0)
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut buffers: Vec<Option<&[u8]>> = vec![None; n_buffers];
    let mut pending = 0usize;
    for (i, need) in needs.iter().enumerate() {
        let p = pointers[i];
        let size = match need {
            Need::Fixed(size) => *size,
            Need::Offsets32(count) | Need::Offsets64(count) => {
                let wide = matches!(need, Need::Offsets64(_));
                if !p.is_null() && *count > 0 {
                    // SAFETY: a valid offsets buffer holds `count` offsets.
                    let last = unsafe {
                        if wide {
                            ptr::read_unaligned((p as *const i64).add(count - 1))
                        } else {
                            i64::from(ptr::read_unaligned((p as *const i32).add(count - 1)))
                        }
                    };
                    pending = usize::try_from(last).unwrap_or(0);
                }
                count * if wide { 8 } else { 4 }
            }
            Need::Data => match format {
                "vu" | "vz" => view_sizes.get(i - 2).copied().unwrap_or(0),
                _ => std::mem::take(&mut pending),
            },
        };
        if !p.is_null() {
            // SAFETY: a valid array's buffer `i` holds at least the bytes
            // its type, length and offset need, computed above.
            buffers[i] = Some(unsafe { std::slice::from_raw_parts(p, size) });
        }
    }
    let mut children = Vec::new();
    for (i, child_schema) in schema.children.iter().enumerate() {
        if i >= usize::try_from(array.n_children).unwrap_or(0) {
            break;
        }
        // SAFETY: a valid array has `n_children` valid children, typed by
        // the schema's children.
        children.push(unsafe { read_array(&**array.children.add(i), child_schema) }?);
    }
    let dictionary = match (&schema.dictionary, array.dictionary.is_null()) {
        (Some(values), false) => {
            // SAFETY: a dictionary-encoded array's dictionary is valid and
            // typed by the schema's dictionary.
            Some(Box::new(unsafe { read_array(&*array.dictionary, values) }?))
        }
        _ => None,
    };
    Ok(ArrayDesc {
        length,
        null_count: array.null_count,
        offset,
        buffers,
        children,
        dictionary,
    })
}

/// A batch as plain descriptions borrowing its buffers.
pub(crate) fn read_batch(batch: &ArrowBatch) -> Result<(SchemaDesc, ArrayDesc<&[u8]>), String> {
    if batch.is_released() {
        return Err("arrow batch was already released".to_owned());
    }
    // SAFETY: an unreleased `ArrowBatch` holds valid C structs (its
    // constructors require it), alive as long as `batch`.
    let schema = unsafe { read_schema(&batch.schema) }?;
    // SAFETY: as above; the array is typed by the schema.
    let array = unsafe { read_array(&batch.array, &schema) }?;
    Ok((schema, array))
}

/// Checks a decoded (untrusted) description against its schema.
pub(crate) fn validate(schema: &SchemaDesc, array: &ArrayDesc<Buffer>) -> Result<(), String> {
    if let Some(metadata) = &schema.metadata {
        check_metadata(metadata)?;
    }
    if schema.format.contains('\0') || schema.name.as_deref().is_some_and(|n| n.contains('\0')) {
        return Err("arrow name or format contains NUL".to_owned());
    }
    let views: Vec<Option<&[u8]>> = array.buffers.iter().map(|b| b.as_deref()).collect();
    let (sizes, child_len) = sizes(&schema.format, array.length, array.offset, &views, true)?;
    for (i, (have, need)) in views.iter().zip(&sizes).enumerate() {
        if have.is_some_and(|b| b.len() < *need) {
            return Err(format!(
                "arrow {:?} buffer {i} has {} bytes, needs {need}",
                schema.format,
                have.map_or(0, <[u8]>::len)
            ));
        }
    }
    if array.null_count < -1 || array.null_count > array.length {
        return Err("arrow null count out of range".to_owned());
    }
    if let Some(ids) = schema
        .format
        .strip_prefix("+ud:")
        .or_else(|| schema.format.strip_prefix("+us:"))
    {
        check_union(ids, schema.format.starts_with("+ud:"), schema, array)?;
    }
    if schema.format == "+r" && array.children.len() != 2 {
        return Err("arrow run-end array needs two children".to_owned());
    }
    if array.children.len() != schema.children.len() {
        return Err("arrow array and schema disagree on children".to_owned());
    }
    for (child, child_schema) in array.children.iter().zip(&schema.children) {
        let covered = child.length.saturating_add(child.offset);
        if let Some(needed) = child_len {
            if usize::try_from(covered).unwrap_or(0) < needed {
                return Err("arrow child array is shorter than its parent needs".to_owned());
            }
        }
        validate(child_schema, child)?;
    }
    match (&schema.dictionary, &array.dictionary) {
        (Some(s), Some(a)) => validate(s, a),
        (None, None) => Ok(()),
        _ => Err("arrow array and schema disagree on the dictionary".to_owned()),
    }
}

/// Checks a union's type ids (each one declared) and, for a dense union,
/// each offset against its child's length.
fn check_union(
    ids: &str,
    dense: bool,
    schema: &SchemaDesc,
    array: &ArrayDesc<Buffer>,
) -> Result<(), String> {
    let bad = |what: &str| format!("arrow union: {what}");
    let declared: Vec<i8> = ids
        .split(',')
        .filter(|id| !id.is_empty())
        .map(|id| id.parse::<i8>().map_err(|_| bad("bad type id list")))
        .collect::<Result<_, _>>()?;
    if declared.len() != schema.children.len() || declared.len() != array.children.len() {
        return Err(bad("type ids and children disagree"));
    }
    let start = usize::try_from(array.offset).map_err(|_| bad("negative offset"))?;
    let end = start + usize::try_from(array.length).map_err(|_| bad("negative length"))?;
    let type_ids: &[u8] = array
        .buffers
        .first()
        .and_then(Option::as_deref)
        .unwrap_or_default();
    let offsets: &[u8] = array
        .buffers
        .get(1)
        .and_then(Option::as_deref)
        .unwrap_or_default();
    for slot in start..end {
        let id = *type_ids
            .get(slot)
            .ok_or_else(|| bad("type ids too short"))? as i8;
        let child = declared
            .iter()
            .position(|d| *d == id)
            .ok_or_else(|| bad("undeclared type id"))?;
        if dense {
            let raw = offsets
                .get(slot * 4..slot * 4 + 4)
                .ok_or_else(|| bad("offsets too short"))?;
            let at = i32::from_ne_bytes(raw.try_into().map_err(|_| bad("offsets"))?);
            if at < 0 || i64::from(at) >= array.children[child].length {
                return Err(bad("offset outside its child"));
            }
        }
    }
    Ok(())
}

/// What a rebuilt schema node owns.
struct OwnedSchema {
    _format: CString,
    _name: Option<CString>,
    _metadata: Option<Vec<u8>>,
    children: Vec<*mut ArrowSchema>,
    dictionary: *mut ArrowSchema,
}

/// What a rebuilt array node owns.
struct OwnedArray {
    _keep: Vec<Buffer>,
    _pointers: Vec<*const c_void>,
    children: Vec<*mut ArrowArray>,
    dictionary: *mut ArrowArray,
}

/// Non-null, aligned address for empty buffers.
static EMPTY: [u64; 8] = [0; 8];

unsafe extern "C" fn release_schema(schema: *mut ArrowSchema) {
    // SAFETY: called by the consumer on a schema `build_schema` made, once;
    // its private data is the `OwnedSchema` box.
    unsafe {
        let schema = &mut *schema;
        let owned = Box::from_raw(schema.private_data as *mut OwnedSchema);
        for child in owned
            .children
            .iter()
            .copied()
            .chain((!owned.dictionary.is_null()).then_some(owned.dictionary))
        {
            if let Some(release) = (*child).release {
                release(child);
            }
            drop(Box::from_raw(child));
        }
        schema.release = None;
    }
}

unsafe extern "C" fn release_array(array: *mut ArrowArray) {
    // SAFETY: as in `release_schema`, for `build_array`'s `OwnedArray`.
    unsafe {
        let array = &mut *array;
        let owned = Box::from_raw(array.private_data as *mut OwnedArray);
        for child in owned
            .children
            .iter()
            .copied()
            .chain((!owned.dictionary.is_null()).then_some(owned.dictionary))
        {
            if let Some(release) = (*child).release {
                release(child);
            }
            drop(Box::from_raw(child));
        }
        array.release = None;
    }
}

fn build_schema(desc: &SchemaDesc) -> Result<ArrowSchema, String> {
    let nul = |_| "arrow string contains NUL".to_owned();
    let format = CString::new(desc.format.clone()).map_err(nul)?;
    let name = desc
        .name
        .clone()
        .map(CString::new)
        .transpose()
        .map_err(nul)?;
    let mut children = Vec::with_capacity(desc.children.len());
    for child in &desc.children {
        children.push(Box::into_raw(Box::new(build_schema(child)?)));
    }
    let dictionary = match &desc.dictionary {
        Some(d) => Box::into_raw(Box::new(build_schema(d)?)),
        None => ptr::null_mut(),
    };
    let mut owned = Box::new(OwnedSchema {
        _format: format,
        _name: name,
        _metadata: desc.metadata.clone(),
        children,
        dictionary,
    });
    let schema = ArrowSchema {
        format: owned._format.as_ptr(),
        name: owned._name.as_ref().map_or(ptr::null(), |n| n.as_ptr()),
        metadata: owned
            ._metadata
            .as_ref()
            .map_or(ptr::null(), |m| m.as_ptr() as *const c_char),
        flags: desc.flags,
        n_children: owned.children.len() as i64,
        children: owned.children.as_mut_ptr(),
        dictionary: owned.dictionary,
        release: Some(release_schema),
        private_data: ptr::null_mut(),
    };
    Ok(ArrowSchema {
        private_data: Box::into_raw(owned) as *mut c_void,
        ..schema
    })
}

fn build_array(desc: &ArrayDesc<Buffer>) -> ArrowArray {
    let keep: Vec<Buffer> = desc.buffers.iter().flatten().cloned().collect();
    let pointers: Vec<*const c_void> = desc
        .buffers
        .iter()
        .map(|b| match b {
            None => ptr::null(),
            Some(b) if b.is_empty() => EMPTY.as_ptr() as *const c_void,
            Some(b) => b.as_ptr() as *const c_void,
        })
        .collect();
    let children: Vec<*mut ArrowArray> = desc
        .children
        .iter()
        .map(|c| Box::into_raw(Box::new(build_array(c))))
        .collect();
    let dictionary = desc
        .dictionary
        .as_ref()
        .map_or(ptr::null_mut(), |d| Box::into_raw(Box::new(build_array(d))));
    let mut owned = Box::new(OwnedArray {
        _keep: keep,
        _pointers: pointers,
        children,
        dictionary,
    });
    ArrowArray {
        length: desc.length,
        null_count: desc.null_count,
        offset: desc.offset,
        n_buffers: owned._pointers.len() as i64,
        n_children: owned.children.len() as i64,
        buffers: owned._pointers.as_mut_ptr(),
        children: owned.children.as_mut_ptr(),
        dictionary: owned.dictionary,
        release: Some(release_array),
        private_data: Box::into_raw(owned) as *mut c_void,
    }
}

/// Rebuilds a batch from a validated description; its buffers stay views
/// of the decoded [`Buffer`]s, which the batch keeps alive.
pub(crate) fn build_batch(
    schema: &SchemaDesc,
    array: &ArrayDesc<Buffer>,
) -> Result<ArrowBatch, String> {
    validate(schema, array)?;
    let schema = build_schema(schema)?;
    let array = build_array(array);
    // SAFETY: both structs were just built here with release callbacks
    // that free exactly what they own; buffers point into `Buffer`s the
    // array keeps, checked by `validate` to be long enough.
    Ok(unsafe { ArrowBatch::from_raw(schema, array) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(format: &str, children: Vec<SchemaDesc>) -> SchemaDesc {
        SchemaDesc {
            format: format.to_owned(),
            name: None,
            metadata: None,
            flags: 0,
            children,
            dictionary: None,
        }
    }

    fn array(
        length: i64,
        buffers: Vec<Option<Vec<u8>>>,
        children: Vec<ArrayDesc<Buffer>>,
    ) -> ArrayDesc<Buffer> {
        ArrayDesc {
            length,
            null_count: 0,
            offset: 0,
            buffers: buffers
                .into_iter()
                .map(|b| b.map(Buffer::from_vec))
                .collect(),
            children,
            dictionary: None,
        }
    }

    #[test]
    fn a_short_buffer_from_a_runner_is_refused() {
        let a = array(4, vec![None, Some(vec![0; 8])], vec![]);
        assert_eq!(
            validate(&schema("i", vec![]), &a),
            Err("arrow \"i\" buffer 1 has 8 bytes, needs 16".to_owned())
        );
    }

    #[test]
    fn string_offsets_past_their_data_are_refused() {
        let offsets: Vec<u8> = [0i32, 2, 9].iter().flat_map(|o| o.to_ne_bytes()).collect();
        let a = array(2, vec![None, Some(offsets), Some(b"abc".to_vec())], vec![]);
        assert_eq!(
            validate(&schema("u", vec![]), &a),
            Err("arrow \"u\" buffer 2 has 3 bytes, needs 9".to_owned())
        );
        let offsets: Vec<u8> = [0i32, 2, 1].iter().flat_map(|o| o.to_ne_bytes()).collect();
        let a = array(2, vec![None, Some(offsets), Some(b"abc".to_vec())], vec![]);
        assert_eq!(
            validate(&schema("u", vec![]), &a),
            Err("arrow offsets decrease or are negative".to_owned())
        );
    }

    #[test]
    fn a_list_child_shorter_than_its_offsets_is_refused() {
        let offsets: Vec<u8> = [0i32, 5].iter().flat_map(|o| o.to_ne_bytes()).collect();
        let child = array(3, vec![None, Some(vec![0; 12])], vec![]);
        let a = array(1, vec![None, Some(offsets)], vec![child]);
        assert_eq!(
            validate(&schema("+l", vec![schema("i", vec![])]), &a),
            Err("arrow child array is shorter than its parent needs".to_owned())
        );
    }

    #[test]
    fn an_undeclared_union_type_id_is_refused() {
        let child = array(2, vec![None, Some(vec![0; 8])], vec![]);
        let a = array(2, vec![Some(vec![0, 7])], vec![child]);
        assert_eq!(
            validate(&schema("+us:0", vec![schema("i", vec![])]), &a),
            Err("arrow union: undeclared type id".to_owned())
        );
    }

    #[test]
    fn malformed_metadata_is_refused() {
        let mut s = schema("i", vec![]);
        s.metadata = Some(vec![1, 0, 0, 0, 200, 0, 0, 0]);
        let a = array(0, vec![None, Some(vec![])], vec![]);
        assert_eq!(validate(&s, &a), Err("malformed arrow metadata".to_owned()));
    }

    #[test]
    fn a_valid_batch_rebuilds_and_reads_back() {
        let values: Vec<u8> = [1i32, 2, 3].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let child = array(3, vec![None, Some(values.clone())], vec![]);
        let top = array(3, vec![None], vec![child]);
        let mut field = schema("i", vec![]);
        field.name = Some("x".to_owned());
        let s = schema("+s", vec![field]);
        let batch = build_batch(&s, &top).expect("valid");
        let (back_schema, back) = read_batch(&batch).expect("reads");
        assert_eq!(back_schema, s);
        assert_eq!(back.children[0].buffers[1], Some(&values[..]));
    }
}
