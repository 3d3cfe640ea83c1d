//! Arrow record batches between arrow-rs (what pyo3-arrow hands over from
//! any `__arrow_c_stream__` object) and plugin-api's C Data structs (what
//! the host dispatches), without copying a buffer. The schema's metadata
//! rides along as the batch struct's metadata, as the arrow plugin reads
//! and writes it.
//!
//! Invariant: arrow-rs's `FFI_ArrowArray`/`FFI_ArrowSchema` and
//! plugin-api's `ArrowArray`/`ArrowSchema` are the same `#[repr(C)]` C
//! Data Interface structs; a move between them is a bitwise copy whose
//! source is forgotten, so each release callback still runs exactly once.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StructArray};
use arrow_data::ffi::FFI_ArrowArray;
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use stowage_plugin_api::arrow::{ArrowArray, ArrowBatch, ArrowSchema};

const _: () = assert!(std::mem::size_of::<FFI_ArrowArray>() == std::mem::size_of::<ArrowArray>());
const _: () = assert!(std::mem::size_of::<FFI_ArrowSchema>() == std::mem::size_of::<ArrowSchema>());

/// Exports arrow-rs batches as host batches (zero-copy).
pub fn to_host(batches: &[RecordBatch]) -> Result<Vec<ArrowBatch>, ArrowError> {
    batches
        .iter()
        .map(|batch| {
            // The schema's metadata (pandas' index and dtypes, a
            // producer's own keys) travels as the struct's metadata.
            let schema = FFI_ArrowSchema::try_from(batch.schema().as_ref())?;
            let array = FFI_ArrowArray::new(&StructArray::from(batch.clone()).into_data());
            let schema = ManuallyDrop::new(schema);
            let array = ManuallyDrop::new(array);
            // SAFETY: same layout (the C Data Interface, asserted above);
            // the arrow-rs originals are forgotten, so ownership (the
            // release duty) moves to the returned batch.
            Ok(unsafe {
                ArrowBatch::from_raw(
                    std::ptr::read(&*schema as *const FFI_ArrowSchema as *const ArrowSchema),
                    std::ptr::read(&*array as *const FFI_ArrowArray as *const ArrowArray),
                )
            })
        })
        .collect()
}

/// Imports host batches as arrow-rs batches (zero-copy: the imported
/// buffers keep the host batch, and whatever it keeps alive, alive).
pub fn from_host(batches: Vec<ArrowBatch>) -> Result<(Vec<RecordBatch>, SchemaRef), ArrowError> {
    let mut out = Vec::with_capacity(batches.len());
    let mut schema: Option<SchemaRef> = None;
    for batch in batches {
        let (raw_schema, raw_array) = batch.into_raw();
        let raw_schema = ManuallyDrop::new(raw_schema);
        let raw_array = ManuallyDrop::new(raw_array);
        // SAFETY: same layout; `into_raw` handed the release duty to us and
        // the plugin-api copies are forgotten, so arrow-rs's structs own it.
        let (ffi_schema, ffi_array) = unsafe {
            (
                std::ptr::read(&*raw_schema as *const ArrowSchema as *const FFI_ArrowSchema),
                std::ptr::read(&*raw_array as *const ArrowArray as *const FFI_ArrowArray),
            )
        };
        // SAFETY: the structs came from a plugin or host export, which the
        // ABI requires to be valid C Data Interface structs.
        let data = unsafe { arrow_array::ffi::from_ffi(ffi_array, &ffi_schema) }?;
        let batch_schema = Arc::new(Schema::try_from(&ffi_schema)?);
        let array = StructArray::from(data);
        let schema = schema.get_or_insert_with(|| Arc::clone(&batch_schema));
        let (_, columns, nulls) = array.into_parts();
        if nulls.is_some_and(|n| n.null_count() > 0) {
            return Err(ArrowError::InvalidArgumentError(
                "a record batch's struct array has top-level nulls".into(),
            ));
        }
        out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
    }
    let schema = schema.unwrap_or_else(|| Arc::new(Schema::empty()));
    Ok((out, schema))
}
