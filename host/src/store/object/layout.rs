//! Where things live in an S3 store (SPEC §13): the object keys under the
//! store's prefix, the escaping of artifact names into one key segment,
//! and the newest-first record ids (inverted ULIDs).
//!
//! ```text
//! blobs/<2 hex>/<blake3>          a large raw blob (one object, mappable once cached)
//! blobs/<2 hex>/<blake3>.zst      a large compressible blob, one zstd frame
//! packs/<16 hex>                  a batch's small blobs, concatenated
//! records/<fan>/<escaped name>/<inverted ULID>.json   one immutable record or tombstone
//! batches/<ULID>                  commit marker of a batch of several artifacts,
//!                                 holding the batch's records (a bundle)
//! uploads/<ULID>.json             journal of a multipart upload in progress
//! format                          the store format marker, `stowage-s3-store N`
//! ```
//!
//! Invariants: an escaped name is one key segment of `[A-Za-z0-9_-]` and
//! `=XX` escapes (`=` is never percent-encoded by object_store's paths,
//! unlike `~` or `%`), so it never contains `/` or `.` and `records/<a>/`
//! is never a prefix of `records/<b>/` for two different names. Record ids
//! are 32 lowercase hex digits, so key order is id order: the first key of
//! a name's prefix is its newest record.
//!
//! Decision: a ULID here is 48 bits of milliseconds and 80 bits of
//! entropy, where the entropy is blake3 of (pid, a process counter, the
//! clock's nanoseconds); ids made by one process are strictly increasing
//! even within one millisecond (the previous one plus one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// The prefix of every blob object.
pub(crate) const BLOBS: &str = "blobs";
/// The prefix of every pack object.
pub(crate) const PACKS: &str = "packs";
/// The prefix of every record object.
pub(crate) const RECORDS: &str = "records";
/// The prefix of batch commit markers.
pub(crate) const BATCHES: &str = "batches";
/// The prefix of multipart upload journals.
pub(crate) const UPLOADS: &str = "uploads";
/// The key of the store format marker (see `marker.rs`).
pub(crate) const FORMAT: &str = "format";
/// What the format marker holds before its number.
pub(crate) const FORMAT_PREFIX: &str = "stowage-s3-store ";
/// The S3 store format (this key layout, record and pack objects) this
/// build reads and writes, recorded in the marker as `stowage-s3-store 1`.
pub(crate) const S3_STORE_FORMAT: u32 = 1;

/// The marker's content for [`S3_STORE_FORMAT`].
pub(crate) fn format_marker() -> String {
    format!("{FORMAT_PREFIX}{S3_STORE_FORMAT}\n")
}

/// The format a marker's content names: `Ok(n)` for `stowage-s3-store n`
/// (one trailing newline allowed) with n ≥ 1, else what is wrong.
pub(crate) fn parse_format_marker(bytes: &[u8]) -> Result<u64, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8")?;
    let number = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .strip_prefix(FORMAT_PREFIX)
        .ok_or("expected \"stowage-s3-store N\"")?;
    match number.parse::<u64>() {
        Ok(n) if n >= 1 && number.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err("expected \"stowage-s3-store N\" with N ≥ 1"),
    }
}

/// `blobs/<2 hex>/<digest>[.zst]`, relative to the store prefix.
pub(crate) fn blob_key(digest: &str, zstd: bool) -> String {
    let fan = digest.get(..2).unwrap_or("00");
    if zstd {
        format!("{BLOBS}/{fan}/{digest}.zst")
    } else {
        format!("{BLOBS}/{fan}/{digest}")
    }
}

/// `packs/<16 hex>`.
pub(crate) fn pack_key(id: u64) -> String {
    format!("{PACKS}/{id:016x}")
}

/// The pack id of a `packs/` key's last segment.
pub(crate) fn parse_pack(segment: &str) -> Option<u64> {
    (segment.len() == 16)
        .then(|| u64::from_str_radix(segment, 16).ok())
        .flatten()
}

/// `records/<fan>/<escaped name>/`, the prefix listing one name's
/// history; `<fan>` is [`record_fan`].
pub(crate) fn record_prefix(name: &str) -> String {
    format!("{RECORDS}/{}/{}/", record_fan(name), escape_name(name))
}

/// The two hex digits of blake3(name) that spread names over 256
/// prefixes: S3 scales request rates per prefix, and a server that walks
/// directories for a listing (s3s-fs) reads one small directory, not
/// every name's.
pub(crate) fn record_fan(name: &str) -> String {
    format!("{:02x}", blake3::hash(name.as_bytes()).as_bytes()[0])
}

/// `records/<fan>/<escaped name>/<inverted id>.json`; a record of a batch
/// of several artifacts is `<inverted id>.<batch id>.json`, so a listing
/// tells which batch bundle (see [`bundle`]) also holds it.
pub(crate) fn record_key(name: &str, id: u128, batch: Option<u128>) -> String {
    match batch {
        Some(batch) => format!("{}{:032x}.{batch:032x}.json", record_prefix(name), !id),
        None => format!("{}{:032x}.json", record_prefix(name), !id),
    }
}

/// The id and batch of a record key's last segment (see [`record_key`]).
pub(crate) fn parse_record_key(segment: &str) -> Option<(u128, Option<u128>)> {
    let stem = segment.strip_suffix(".json")?;
    let (id, batch) = match stem.split_once('.') {
        Some((id, batch)) => (id, Some(parse_hex32(batch)?)),
        None => (stem, None),
    };
    Some((!parse_hex32(id)?, batch))
}

/// The batch a record key (any depth) names, if any.
pub(crate) fn record_key_batch(key: &str) -> Option<u128> {
    parse_record_key(key.rsplit('/').next()?)?.1
}

fn parse_hex32(hex: &str) -> Option<u128> {
    (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(hex, 16).ok())
        .flatten()
}

/// The first line of a batch bundle.
const BUNDLE_HEADER: &[u8] = b"stowage-batch 1\n";

/// The most record bytes a bundle holds: a reader fetches a bundle whole
/// once it wants two of its records, so a huge batch's bundle would cost
/// more than the records it saves reading one by one.
pub(crate) const BUNDLE_MAX: usize = 8 << 20;

/// The content of `batches/<id>`, a batch's commit marker: a header line,
/// then per record `<escaped name> <record object>\n` (the same bytes as
/// the record's own object), so one GET reads every record of a batch —
/// unless they pass `max_bytes`: then the header alone (still the commit
/// marker; readers read each record object instead).
pub(crate) fn bundle<'a>(
    records: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    max_bytes: usize,
) -> Vec<u8> {
    let mut out = BUNDLE_HEADER.to_vec();
    for (name, object) in records {
        out.extend_from_slice(escape_name(name).as_bytes());
        out.push(b' ');
        out.extend_from_slice(object);
        out.push(b'\n');
        if out.len() - BUNDLE_HEADER.len() > max_bytes {
            out.truncate(BUNDLE_HEADER.len());
            break;
        }
    }
    out
}

/// Each record object of a batch bundle by its escaped name; `None` if
/// the bytes are not a bundle this build reads.
pub(crate) fn bundle_records(bytes: &[u8]) -> Option<HashMap<&str, &[u8]>> {
    let body = bytes.strip_prefix(BUNDLE_HEADER)?;
    let mut records = HashMap::new();
    for line in body.split(|&b| b == b'\n').filter(|line| !line.is_empty()) {
        let space = line.iter().position(|&b| b == b' ')?;
        let name = std::str::from_utf8(&line[..space]).ok()?;
        records.insert(name, &line[space + 1..]);
    }
    Some(records)
}

/// `batches/<32 hex>`.
pub(crate) fn batch_key(id: u128) -> String {
    format!("{BATCHES}/{id:032x}")
}

/// The batch id of a `batches/` key's last segment.
pub(crate) fn parse_batch(segment: &str) -> Option<u128> {
    (segment.len() == 32)
        .then(|| u128::from_str_radix(segment, 16).ok())
        .flatten()
}

/// `uploads/<32 hex>.json`.
pub(crate) fn upload_key(id: u128) -> String {
    format!("{UPLOADS}/{id:032x}.json")
}

/// One key segment for an artifact name: `[A-Za-z0-9_-]` as is, every
/// other byte as `=` and two lowercase hex digits.
pub(crate) fn escape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("={byte:02x}"));
        }
    }
    out
}

/// The name an escaped segment stands for; `None` if it is not one
/// [`escape_name`] makes.
pub(crate) fn unescape_name(segment: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(segment.len());
    let mut rest = segment.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'=' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// A new id: milliseconds since the epoch in the top 48 bits, entropy
/// below; strictly increasing within this process.
pub(crate) fn new_ulid() -> u128 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static LAST: Mutex<u128> = Mutex::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = u128::from(u64::try_from(now.as_millis()).unwrap_or(u64::MAX) & ((1 << 48) - 1));
    let mut seed = Vec::with_capacity(24);
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    seed.extend_from_slice(&now.subsec_nanos().to_le_bytes());
    let hash = blake3::hash(&seed);
    let mut entropy = [0u8; 16];
    entropy[6..].copy_from_slice(&hash.as_bytes()[..10]);
    let id = (millis << 80) | u128::from_be_bytes(entropy);
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    let id = if id <= *last { *last + 1 } else { id };
    *last = id;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_are_one_safe_segment_and_round_trip() {
        for name in [
            "plain-name_1",
            "with space",
            "dots.and~tilde",
            "ünï",
            "a%2Fb",
        ] {
            let escaped = escape_name(name);
            assert!(escaped
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)));
            assert_eq!(unescape_name(&escaped).as_deref(), Some(name));
        }
        assert_eq!(escape_name("a.b c"), "a=2eb=20c");
        assert_eq!(unescape_name("=zz"), None);
    }

    #[test]
    fn newer_records_sort_first_in_key_order() {
        let old = new_ulid();
        let new = new_ulid();
        assert!(new > old);
        let (k_old, k_new) = (record_key("x", old, None), record_key("x", new, Some(7)));
        assert!(k_new < k_old, "{k_new} sorts before {k_old}");
        let segment = k_new.rsplit('/').next().unwrap_or_default();
        assert_eq!(parse_record_key(segment), Some((new, Some(7))));
        assert_eq!(record_key_batch(&k_new), Some(7));
        assert_eq!(record_key_batch(&k_old), None);
        let segment = k_old.rsplit('/').next().unwrap_or_default();
        assert_eq!(parse_record_key(segment), Some((old, None)));
        for bad in [
            "x.json",
            "+0000000000000000000000000000000.json",
            "ab.cd.json",
        ] {
            assert_eq!(parse_record_key(bad), None, "{bad}");
        }
        assert_eq!(
            record_prefix("x"),
            format!("records/{}/x/", record_fan("x"))
        );
        assert_eq!(record_fan("x").len(), 2);
    }

    #[test]
    fn a_bundle_holds_each_record_object_under_its_escaped_name() {
        let records = [("a b", &b"{\"put\":1}"[..]), ("c", &b"{}"[..])];
        let bytes = bundle(records, 21);
        assert_eq!(bytes, b"stowage-batch 1\na=20b {\"put\":1}\nc {}\n");
        let too_big = bundle(records, 20);
        assert_eq!(too_big, b"stowage-batch 1\n");
        assert_eq!(bundle_records(&too_big).map(|r| r.len()), Some(0));
        let records = bundle_records(&bytes).unwrap_or_default();
        assert_eq!(records.get("a=20b"), Some(&&b"{\"put\":1}"[..]));
        assert_eq!(records.get("c"), Some(&&b"{}"[..]));
        assert_eq!(bundle_records(b"committed\n"), None);
        assert_eq!(bundle_records(b"stowage-batch 1\nno-space\n"), None);
    }

    #[test]
    fn keys_have_the_documented_shape() {
        let digest = "ab".repeat(32);
        assert_eq!(blob_key(&digest, false), format!("blobs/ab/{digest}"));
        assert_eq!(blob_key(&digest, true), format!("blobs/ab/{digest}.zst"));
        assert_eq!(pack_key(255), "packs/00000000000000ff");
        assert_eq!(parse_pack("00000000000000ff"), Some(255));
        assert_eq!(parse_pack("ff"), None);
        let batch = batch_key(0xabc);
        assert_eq!(batch, format!("batches/{:032x}", 0xabc));
        assert_eq!(
            parse_batch(batch.rsplit('/').next().unwrap_or_default()),
            Some(0xabc)
        );
        assert_eq!(parse_batch("abc"), None);
    }

    #[test]
    fn the_format_marker_round_trips_and_rejects_other_text() {
        assert_eq!(format_marker(), "stowage-s3-store 1\n");
        assert_eq!(parse_format_marker(format_marker().as_bytes()), Ok(1));
        assert_eq!(parse_format_marker(b"stowage-s3-store 99"), Ok(99));
        let no_prefix = Err("expected \"stowage-s3-store N\"");
        assert_eq!(parse_format_marker(b"stowage-store 2\n"), no_prefix);
        assert_eq!(parse_format_marker(b""), no_prefix);
        let bad_number = Err("expected \"stowage-s3-store N\" with N ≥ 1");
        for bad in [
            &b"stowage-s3-store 0"[..],
            b"stowage-s3-store +1",
            b"stowage-s3-store x\n",
        ] {
            assert_eq!(parse_format_marker(bad), bad_number);
        }
        assert_eq!(parse_format_marker(b"\xff"), Err("not UTF-8"));
    }
}
