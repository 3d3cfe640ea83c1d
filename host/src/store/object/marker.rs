//! The format marker of an [`S3Store`]: the object `format` under the
//! store prefix, holding `stowage-s3-store N` and a newline, the version of
//! the store's layout (keys, record and pack objects; see `layout.rs`),
//! distinct from each record's `format_version` and from the directory
//! store's `stowage-store N`. A build that changes the layout raises
//! [`S3_STORE_FORMAT`], and older builds then refuse the store instead of
//! misreading or damaging it.
//!
//! Invariants: the marker is read at most once per [`S3Store`] instance,
//! lazily, by the first operation that reads or writes (one GET; the
//! outcome is kept, so no artifact ever costs a marker request); a store
//! whose marker names a newer format ([`StoreError::NewerStoreFormat`]) or
//! is malformed ([`StoreError::BadFormatMarker`]) refuses every later
//! read and write of that instance with the same one-line error.
//!
//! Decision: an absent marker reads as format 1: a new, empty store, or a
//! store written before markers existed (its layout is format 1). The
//! first write of an instance that found no marker puts it before any blob
//! or record of that write; the content is the same for every writer of
//! this build, so concurrent first writers need no conditional request. A
//! read-only instance never writes it; gc does not write it either.
//! Decision: unlike the directory store, which still reads a store of a
//! newer format, an S3 store of a newer format refuses reads too: its
//! layout is what locates records, so a read could silently miss them.
//! Decision: the errors reuse the directory store's variants, naming the
//! store URL (or the marker's `s3://…/format` URL) where those name a path.

use std::sync::{Mutex, PoisonError};

use super::{layout, S3Store};
use crate::store::error::StoreError;
use layout::S3_STORE_FORMAT;

/// What this instance knows of the marker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not read yet.
    Unknown,
    /// No marker: format 1, written at this instance's first write.
    Absent,
    /// A marker of a format this build reads and writes.
    Current,
    /// A marker of a newer format.
    Newer(u64),
    /// A marker that is not `stowage-s3-store N`.
    Malformed(&'static str),
}

/// The marker state of one [`S3Store`] instance.
#[derive(Debug)]
pub(super) struct FormatCheck(Mutex<State>);

impl FormatCheck {
    /// Nothing known yet: the first operation reads the marker.
    pub(super) fn new() -> FormatCheck {
        FormatCheck(Mutex::new(State::Unknown))
    }
}

impl S3Store {
    /// Reads the store's format marker if this instance has not yet, and
    /// refuses a newer or malformed one; with `write` (on a writable
    /// instance) also puts a missing marker. Blocks on the store's
    /// runtime: call it from the synchronous entry points only.
    pub(super) fn check_format(&self, write: bool) -> Result<(), StoreError> {
        // Held across the requests, so concurrent first operations of one
        // instance read (and write) the marker once.
        let mut state = self.format.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *state == State::Unknown {
            *state = match self.block_on(self.get_bytes(layout::FORMAT))? {
                None => State::Absent,
                Some(bytes) => match layout::parse_format_marker(&bytes) {
                    Ok(n) if n > u64::from(S3_STORE_FORMAT) => State::Newer(n),
                    Ok(_) => State::Current,
                    Err(reason) => State::Malformed(reason),
                },
            };
        }
        match *state {
            State::Newer(found) => Err(StoreError::NewerStoreFormat {
                dir: self.location.clone(),
                found,
                supported: S3_STORE_FORMAT,
            }),
            State::Malformed(reason) => Err(StoreError::BadFormatMarker {
                path: self.key_url(layout::FORMAT),
                reason: reason.to_owned(),
            }),
            State::Absent if write && !self.read_only => {
                self.block_on(self.put(layout::FORMAT, layout::format_marker()))?;
                tracing::debug!(target: "stowage::store", store = %self.url(), "format marker written");
                *state = State::Current;
                Ok(())
            }
            State::Unknown | State::Absent | State::Current => Ok(()),
        }
    }
}
