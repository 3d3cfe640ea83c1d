//! The Arrow C Data Interface structs, defined here as raw `#[repr(C)]` types
//! so the interface never pins an arrow-rs version.
//!
//! A record batch crosses as one [`ArrowBatch`]: an [`ArrowSchema`] of a struct
//! type plus the matching struct [`ArrowArray`]. Ownership follows the C Data
//! Interface: whoever holds a struct with a `release` callback must call it
//! exactly once; moving a struct means copying it and clearing the source's
//! `release`. [`ArrowBatch`] does both in `Drop` and [`ArrowBatch::take`].
//!
//! [`ArrowBatch::share`] makes a fresh, independently releasable export of a
//! batch without copying any buffer: every node of the copy points at the same
//! buffers and keeps the original alive through a reference count. The host
//! uses it to hand each plugin call its own batch (SPEC §2.3) while it keeps
//! the original.
//!
//! Converting to arrow-rs: `arrow::ffi::FFI_ArrowArray`/`FFI_ArrowSchema` have
//! exactly these layouts (the C ABI), so a batch converts by moving the struct.
//!
//! Decision: shared copies reuse the original's `buffers` array and strings
//! (consumers only read those) and allocate fresh child/dictionary structs,
//! because consumers are allowed to move children out individually.

use std::ffi::{c_char, c_void};
use std::sync::Arc;

use abi_stable::StableAbi;

/// `struct ArrowSchema` from the Arrow C Data Interface.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ArrowSchema {
    /// Format string.
    pub format: *const c_char,
    /// Field name (may be null).
    pub name: *const c_char,
    /// Binary-encoded metadata (may be null).
    pub metadata: *const c_char,
    /// `ARROW_FLAG_*` bits.
    pub flags: i64,
    /// Number of children.
    pub n_children: i64,
    /// Child schemas.
    pub children: *mut *mut ArrowSchema,
    /// Dictionary schema (may be null).
    pub dictionary: *mut ArrowSchema,
    /// Release callback; `None` once released or moved.
    pub release: Option<unsafe extern "C" fn(*mut ArrowSchema)>,
    /// Producer-private data.
    pub private_data: *mut c_void,
}

/// `struct ArrowArray` from the Arrow C Data Interface.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ArrowArray {
    /// Logical length.
    pub length: i64,
    /// Null count, or -1 if unknown.
    pub null_count: i64,
    /// Logical offset.
    pub offset: i64,
    /// Number of buffers.
    pub n_buffers: i64,
    /// Number of children.
    pub n_children: i64,
    /// Buffer pointers.
    pub buffers: *mut *const c_void,
    /// Child arrays.
    pub children: *mut *mut ArrowArray,
    /// Dictionary array (may be null).
    pub dictionary: *mut ArrowArray,
    /// Release callback; `None` once released or moved.
    pub release: Option<unsafe extern "C" fn(*mut ArrowArray)>,
    /// Producer-private data.
    pub private_data: *mut c_void,
}

impl ArrowSchema {
    /// A released (empty) schema, the state a moved-from struct is left in.
    pub const fn released() -> Self {
        ArrowSchema {
            format: std::ptr::null(),
            name: std::ptr::null(),
            metadata: std::ptr::null(),
            flags: 0,
            n_children: 0,
            children: std::ptr::null_mut(),
            dictionary: std::ptr::null_mut(),
            release: None,
            private_data: std::ptr::null_mut(),
        }
    }
}

impl ArrowArray {
    /// A released (empty) array, the state a moved-from struct is left in.
    pub const fn released() -> Self {
        ArrowArray {
            length: 0,
            null_count: 0,
            offset: 0,
            n_buffers: 0,
            n_children: 0,
            buffers: std::ptr::null_mut(),
            children: std::ptr::null_mut(),
            dictionary: std::ptr::null_mut(),
            release: None,
            private_data: std::ptr::null_mut(),
        }
    }
}

/// One record batch: a struct-typed schema and its array. Releases both in
/// `Drop`, each exactly once.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ArrowBatch {
    /// The batch's schema (format `+s`).
    pub schema: ArrowSchema,
    /// The batch's struct array.
    pub array: ArrowArray,
}

// SAFETY: the C Data Interface requires exported data to be immutable and its
// release callbacks callable from any thread; a batch is only ever used by one
// owner at a time (moves clear the source).
unsafe impl Send for ArrowBatch {}
// SAFETY: shared references only read immutable C structs and buffers.
unsafe impl Sync for ArrowBatch {}

impl ArrowBatch {
    /// Takes ownership of a batch exported by someone else.
    ///
    /// # Safety
    /// - `schema` and `array` are valid C Data Interface structs (or released);
    /// - the caller gives up ownership: it must not release them itself.
    pub unsafe fn from_raw(schema: ArrowSchema, array: ArrowArray) -> Self {
        ArrowBatch { schema, array }
    }

    /// Splits the batch into its raw structs, handing release duty to the
    /// caller (e.g. to import them with arrow-rs).
    pub fn into_raw(self) -> (ArrowSchema, ArrowArray) {
        let mut this = std::mem::ManuallyDrop::new(self);
        let schema = std::mem::replace(&mut this.schema, ArrowSchema::released());
        let array = std::mem::replace(&mut this.array, ArrowArray::released());
        (schema, array)
    }

    /// Whether both halves have already been released or moved out.
    pub fn is_released(&self) -> bool {
        self.schema.release.is_none() && self.array.release.is_none()
    }

    /// Moves the batch out, leaving this one released (the C Data Interface
    /// "move").
    pub fn take(&mut self) -> ArrowBatch {
        ArrowBatch {
            schema: std::mem::replace(&mut self.schema, ArrowSchema::released()),
            array: std::mem::replace(&mut self.array, ArrowArray::released()),
        }
    }

    /// A fresh export of the same data: independently releasable, zero-copy,
    /// keeping `original` alive until every share is released.
    pub fn share(original: &Arc<ArrowBatch>) -> ArrowBatch {
        Self::share_keeping(original, None)
    }

    /// This batch, re-exported so that releasing it (or any share made from
    /// it later) also keeps `guard` alive until the last node is released.
    ///
    /// For data whose buffers point into memory someone else owns (a
    /// memory-mapped blob): the guard owns that memory, and every node of
    /// the returned batch holds it, even a child a consumer moved out.
    pub fn keeping(self, guard: Arc<dyn Send + Sync>) -> ArrowBatch {
        Self::share_keeping(&Arc::new(self), Some(guard))
    }

    fn share_keeping(
        original: &Arc<ArrowBatch>,
        guard: Option<Arc<dyn Send + Sync>>,
    ) -> ArrowBatch {
        let keeper = Keeper {
            _original: Arc::clone(original),
            _guard: guard,
        };
        // SAFETY: `original` is a valid batch (it came through `from_raw` or a
        // plugin export, both of which require validity) and `keeper` keeps it
        // alive for as long as any node of the share exists.
        unsafe {
            ArrowBatch {
                schema: share_schema(&original.schema, &keeper),
                array: share_array(&original.array, &keeper),
            }
        }
    }
}

impl Drop for ArrowBatch {
    fn drop(&mut self) {
        release_schema(&mut self.schema);
        release_array(&mut self.array);
    }
}

fn release_schema(schema: &mut ArrowSchema) {
    if let Some(release) = schema.release {
        // SAFETY: a set `release` means we own a live struct; the callback
        // clears `release`, and we clear it too so it never runs twice.
        unsafe { release(schema) };
        schema.release = None;
    }
}

fn release_array(array: &mut ArrowArray) {
    if let Some(release) = array.release {
        // SAFETY: as in `release_schema`.
        unsafe { release(array) };
        array.release = None;
    }
}

/// Keeps the original batch (and the memory its buffers point into) alive
/// for its shares; dropping the last one releases it.
#[derive(Clone)]
struct Keeper {
    _original: Arc<ArrowBatch>,
    _guard: Option<Arc<dyn Send + Sync>>,
}

struct SharedSchema {
    _keeper: Keeper,
    children: Vec<*mut ArrowSchema>,
    dictionary: *mut ArrowSchema,
}

struct SharedArray {
    _keeper: Keeper,
    children: Vec<*mut ArrowArray>,
    dictionary: *mut ArrowArray,
}

/// # Safety
/// `src` is a valid, unreleased C schema kept alive by `keeper`.
unsafe fn share_schema(src: &ArrowSchema, keeper: &Keeper) -> ArrowSchema {
    let n_children = usize::try_from(src.n_children).unwrap_or(0);
    let mut children = Vec::with_capacity(n_children);
    for i in 0..n_children {
        // SAFETY: a valid schema has `n_children` valid child pointers.
        let child = unsafe { &**src.children.add(i) };
        // SAFETY: children of a valid schema are valid and share its keeper.
        children.push(Box::into_raw(Box::new(unsafe {
            share_schema(child, keeper)
        })));
    }
    let dictionary = if src.dictionary.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a non-null dictionary of a valid schema is valid.
        Box::into_raw(Box::new(unsafe { share_schema(&*src.dictionary, keeper) }))
    };
    let mut private = Box::new(SharedSchema {
        _keeper: keeper.clone(),
        children,
        dictionary,
    });
    ArrowSchema {
        format: src.format,
        name: src.name,
        metadata: src.metadata,
        flags: src.flags,
        n_children: src.n_children,
        children: private.children.as_mut_ptr(),
        dictionary,
        release: Some(release_shared_schema),
        private_data: Box::into_raw(private) as *mut c_void,
    }
}

/// # Safety
/// `src` is a valid, unreleased C array kept alive by `keeper`.
unsafe fn share_array(src: &ArrowArray, keeper: &Keeper) -> ArrowArray {
    let n_children = usize::try_from(src.n_children).unwrap_or(0);
    let mut children = Vec::with_capacity(n_children);
    for i in 0..n_children {
        // SAFETY: a valid array has `n_children` valid child pointers.
        let child = unsafe { &**src.children.add(i) };
        // SAFETY: children of a valid array are valid and share its keeper.
        children.push(Box::into_raw(Box::new(unsafe {
            share_array(child, keeper)
        })));
    }
    let dictionary = if src.dictionary.is_null() {
        std::ptr::null_mut()
    } else {
        // SAFETY: a non-null dictionary of a valid array is valid.
        Box::into_raw(Box::new(unsafe { share_array(&*src.dictionary, keeper) }))
    };
    let mut private = Box::new(SharedArray {
        _keeper: keeper.clone(),
        children,
        dictionary,
    });
    ArrowArray {
        length: src.length,
        null_count: src.null_count,
        offset: src.offset,
        n_buffers: src.n_buffers,
        n_children: src.n_children,
        buffers: src.buffers,
        children: private.children.as_mut_ptr(),
        dictionary,
        release: Some(release_shared_array),
        private_data: Box::into_raw(private) as *mut c_void,
    }
}

unsafe extern "C" fn release_shared_schema(schema: *mut ArrowSchema) {
    // SAFETY: only called by the owner of a schema made by `share_schema`,
    // whose private data is a boxed `SharedSchema`.
    let schema = unsafe { &mut *schema };
    // SAFETY: as above; the box is reclaimed exactly once because `release`
    // is cleared below.
    let private = unsafe { Box::from_raw(schema.private_data as *mut SharedSchema) };
    for &child in &private.children {
        // SAFETY: each child was boxed by `share_schema`; a moved-out child has
        // `release == None` and is just freed.
        let mut child = unsafe { Box::from_raw(child) };
        release_schema(&mut child);
    }
    if !private.dictionary.is_null() {
        // SAFETY: boxed by `share_schema`.
        let mut dictionary = unsafe { Box::from_raw(private.dictionary) };
        release_schema(&mut dictionary);
    }
    schema.release = None;
}

unsafe extern "C" fn release_shared_array(array: *mut ArrowArray) {
    // SAFETY: only called by the owner of an array made by `share_array`,
    // whose private data is a boxed `SharedArray`.
    let array = unsafe { &mut *array };
    // SAFETY: as above; reclaimed once because `release` is cleared below.
    let private = unsafe { Box::from_raw(array.private_data as *mut SharedArray) };
    for &child in &private.children {
        // SAFETY: each child was boxed by `share_array`.
        let mut child = unsafe { Box::from_raw(child) };
        release_array(&mut child);
    }
    if !private.dictionary.is_null() {
        // SAFETY: boxed by `share_array`.
        let mut dictionary = unsafe { Box::from_raw(private.dictionary) };
        release_array(&mut dictionary);
    }
    array.release = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{count_releases, ReleaseCounts};

    unsafe extern "C" fn mark_schema_released(schema: *mut ArrowSchema) {
        // SAFETY: test structs are plain values owned by the caller.
        unsafe { (*schema).release = None };
    }

    unsafe extern "C" fn mark_array_released(array: *mut ArrowArray) {
        // SAFETY: as above.
        unsafe { (*array).release = None };
    }

    fn counted_batch() -> (ArrowBatch, Arc<ReleaseCounts>) {
        let mut schema = ArrowSchema::released();
        schema.format = c"+s".as_ptr();
        schema.release = Some(mark_schema_released);
        let mut array = ArrowArray::released();
        array.length = 3;
        array.release = Some(mark_array_released);
        // SAFETY: the structs above are valid (no children, no buffers).
        count_releases(unsafe { ArrowBatch::from_raw(schema, array) })
    }

    #[test]
    fn original_released_once_after_all_shares_drop() {
        let (batch, releases) = counted_batch();
        let original = Arc::new(batch);
        let shares: Vec<ArrowBatch> = (0..3).map(|_| ArrowBatch::share(&original)).collect();
        assert_eq!(shares[1].array.length, 3);
        drop(original);
        assert_eq!(releases.get(), (0, 0));
        let mut shares = shares;
        let moved = shares[0].take();
        assert!(shares[0].is_released());
        drop(shares);
        assert_eq!(releases.get(), (0, 0));
        drop(moved);
        assert_eq!(releases.get(), (1, 1));
    }

    #[test]
    fn kept_guard_outlives_the_batch_and_every_later_share() {
        let (batch, releases) = counted_batch();
        let guard: Arc<dyn Send + Sync> = Arc::new(vec![0u8; 16]);
        let kept = Arc::new(batch.keeping(Arc::clone(&guard)));
        let share = ArrowBatch::share(&kept);
        assert_eq!(share.array.length, 3);
        drop(kept);
        // One hold per node of the kept batch (its schema and its array).
        assert_eq!(
            Arc::strong_count(&guard),
            3,
            "the share still holds the guard"
        );
        assert_eq!(releases.get(), (0, 0));
        drop(share);
        assert_eq!(releases.get(), (1, 1));
        assert_eq!(Arc::strong_count(&guard), 1, "released with the last node");
    }
}
