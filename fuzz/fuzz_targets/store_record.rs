//! Fuzzes the store's index-log reader (framed, checksummed JSON records):
//! any bytes give records or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stowage::store::fuzz_replay_log(data);
});
