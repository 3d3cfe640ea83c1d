//! Conversions between the SDK's raw C Data Interface structs
//! ([`ArrowBatch`]) and arrow-rs [`RecordBatch`]es. The only module of this
//! crate with `unsafe` code.
//!
//! Ownership (C Data Interface "move"): [`import_batch`] takes the batch, moves
//! both structs into arrow-rs's `FFI_ArrowSchema`/`FFI_ArrowArray`, which call
//! `release` exactly once — the schema when this function returns, the array
//! when the last arrow-rs buffer imported from it is dropped. [`export_batch`]
//! hands out structs whose `release` (arrow-rs's) frees the exported data.
//!
//! Invariants:
//! - `stowage_plugin_api::ArrowSchema`/`ArrowArray` and arrow-rs's
//!   `FFI_ArrowSchema`/`FFI_ArrowArray` are both `#[repr(C)]` definitions of
//!   the C Data Interface structs, so they have the same size, alignment and
//!   field order; `transmute` checks the size at compile time.
//! - The C Data import does not validate: every imported batch goes through
//!   `ArrayData::validate_full` and `RecordBatch::try_new_with_options` before
//!   anything reads it.
//!
//! Decision: a top-level struct array with nulls is refused (a record batch
//! has no row validity), as is a batch whose schema is not a struct (`+s`).

#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::sync::Arc;

use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::{Array, RecordBatch, RecordBatchOptions, StructArray};
use arrow_buffer::Buffer;
use arrow_schema::{DataType, Schema};
use stowage_plugin_api::{ArrowArray, ArrowBatch, ArrowSchema};

use crate::error::FormatError;

/// Imports one batch handed over by the host, validating it fully. The
/// batch's structs are released exactly once whatever the outcome.
pub fn import_batch(batch: ArrowBatch) -> Result<RecordBatch, FormatError> {
    if batch.schema.release.is_none() || batch.array.release.is_none() {
        // Dropping releases whichever half is still live.
        return Err(FormatError::UnsupportedBatch(
            "the batch was already released".into(),
        ));
    }
    let (schema, array) = batch.into_raw();
    // SAFETY: `ArrowSchema` and `FFI_ArrowSchema` are both `#[repr(C)]`
    // layouts of the C `struct ArrowSchema` (same fields, same order, same
    // types up to pointer targets); ownership moves with the bits, and
    // `into_raw` cleared ours, so `release` runs once, from arrow-rs's Drop.
    let ffi_schema: FFI_ArrowSchema = unsafe { std::mem::transmute::<ArrowSchema, _>(schema) };
    // SAFETY: as above, for `struct ArrowArray`.
    let ffi_array: FFI_ArrowArray = unsafe { std::mem::transmute::<ArrowArray, _>(array) };
    let arrow_schema = Schema::try_from(&ffi_schema)?;
    // SAFETY: `from_ffi` requires a valid, unreleased C array matching the
    // schema. The host's export (SDK `ArrowBatch::share`, or a plugin export)
    // guarantees the structs are well-formed; the *data* is not trusted and is
    // validated in full right below, before any value is read.
    let data = unsafe { from_ffi(ffi_array, &ffi_schema) }?;
    drop(ffi_schema);
    if !matches!(data.data_type(), DataType::Struct(_)) {
        return Err(FormatError::UnsupportedBatch(format!(
            "a batch must be a struct array, got {}",
            data.data_type()
        )));
    }
    data.validate_full()?;
    let rows = data.len();
    let structs = StructArray::from(data);
    if structs.null_count() > 0 {
        return Err(FormatError::UnsupportedBatch(
            "the batch's struct array has null rows".into(),
        ));
    }
    let (_, columns, _) = structs.into_parts();
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(arrow_schema),
        columns,
        &options,
    )?)
}

/// Exports a batch as C Data Interface structs for the host.
pub fn export_batch(batch: &RecordBatch) -> Result<ArrowBatch, FormatError> {
    let ffi_schema = FFI_ArrowSchema::try_from(batch.schema().as_ref())?;
    let data = StructArray::from(batch.clone()).into_data();
    let ffi_array = FFI_ArrowArray::new(&data);
    // SAFETY: the same layout equivalence as in `import_batch`, in the other
    // direction; arrow-rs's struct is moved out whole and never dropped here,
    // so its `release` runs once, when the receiver releases the batch.
    let schema: ArrowSchema = unsafe { std::mem::transmute::<FFI_ArrowSchema, _>(ffi_schema) };
    // SAFETY: as above, for the array.
    let array: ArrowArray = unsafe { std::mem::transmute::<FFI_ArrowArray, _>(ffi_array) };
    // SAFETY: both structs were just exported by arrow-rs (valid, unreleased)
    // and ownership passes to the returned batch.
    Ok(unsafe { ArrowBatch::from_raw(schema, array) })
}

/// The buffer `deserialize` decodes a stored file from: the lent blob
/// itself (zero-copy) when it starts on a [`FILE_ALIGNMENT`] boundary, else
/// one aligned copy.
///
/// Only for building the value `deserialize` returns: the host keeps the
/// blobs it lent alive as long as that value (`Plugin::deserialize`'s
/// contract), and every batch read from this buffer is part of it. That is
/// the promise [`lent_buffer`] asks for.
///
/// [`FILE_ALIGNMENT`]: crate::FILE_ALIGNMENT
pub(crate) fn file_buffer_for_value(blob: &[u8]) -> Buffer {
    if blob.as_ptr().align_offset(crate::FILE_ALIGNMENT) == 0 {
        // SAFETY: see above: the blob outlives every array of the value.
        unsafe { lent_buffer(blob) }
    } else {
        Buffer::from(blob)
    }
}

/// An arrow-rs [`Buffer`] over bytes the host lent, without copying them.
///
/// # Safety
/// `bytes` must stay valid and unchanged for as long as the returned buffer,
/// any slice of it, or any array read from it lives (including exports of
/// such arrays handed to the host). [`Plugin::deserialize`]'s contract gives
/// exactly that for its blobs: the host keeps them alive as long as the
/// value it gets back.
///
/// [`Plugin::deserialize`]: stowage_plugin_api::Plugin::deserialize
unsafe fn lent_buffer(bytes: &[u8]) -> Buffer {
    /// Owns nothing: the host owns the memory (see above).
    struct HostLent;
    let start = NonNull::from(bytes).cast::<u8>();
    // SAFETY: `start` is valid for `bytes.len()` bytes, and for long enough
    // by the caller's promise.
    unsafe { Buffer::from_custom_allocation(start, bytes.len(), Arc::new(HostLent)) }
}

/// Test support: C Data that is well-formed but invalid.
#[cfg(test)]
pub(crate) mod test_data {
    use stowage_plugin_api::{ArrowArray, ArrowBatch, ArrowSchema};

    /// A batch whose struct array holds a string child with invalid UTF-8:
    /// well-formed structs and in-bounds offsets (the C Data import reads the
    /// last offset to size the values, so anything past the buffers would be
    /// an out-of-bounds read before validation could run), invalid data.
    pub fn invalid_batch() -> ArrowBatch {
        use arrow_array::{Array, StringArray, StructArray};
        use arrow_buffer::Buffer;
        use arrow_data::ArrayDataBuilder;
        use arrow_schema::{DataType, Field, Fields};

        let fields = Fields::from(vec![Field::new("s", DataType::Utf8, false)]);
        let offsets = Buffer::from_slice_ref([0i32, 1, 3]);
        let values = Buffer::from_slice_ref([0xffu8, b'o', b'k']);
        let builder = ArrayDataBuilder::new(DataType::Utf8)
            .len(2)
            .add_buffer(offsets)
            .add_buffer(values);
        // SAFETY: deliberately invalid (0xff is not UTF-8) but every offset
        // is within the 3 value bytes; it is only exported, never read here,
        // to prove the plugin's import validates before reading.
        let strings = StringArray::from(unsafe { builder.build_unchecked() });
        let structs = StructArray::new(fields, vec![std::sync::Arc::new(strings) as _], None);
        let data = structs.into_data();
        let ffi_array = arrow_array::ffi::FFI_ArrowArray::new(&data);
        let ffi_schema = arrow_array::ffi::FFI_ArrowSchema::try_from(data.data_type())
            .expect("a struct type exports");
        // SAFETY: same layout equivalence as `export_batch`.
        let schema: ArrowSchema = unsafe { std::mem::transmute(ffi_schema) };
        // SAFETY: as above.
        let array: ArrowArray = unsafe { std::mem::transmute(ffi_array) };
        // SAFETY: freshly exported, ownership passes to the batch.
        unsafe { ArrowBatch::from_raw(schema, array) }
    }
}
