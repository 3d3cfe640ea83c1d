//! Fuzzes the arrow plugin's IPC *stream* reader (message framing, schema
//! and layout checks, arrow-ipc decoding, full validation) and the format
//! sniffer: any bytes give a table or an error, never a panic, abort or
//! out-of-bounds read.
//!
//! Decision: strict, as in `arrow_ipc_file.rs`: a panic arrow-rs raises
//! inside the plugin's `catch_unwind` guard still aborts here (a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stowage_arrow::read::detect(data);
    if let Ok(table) = stowage_arrow::read_stream(data) {
        let _ = stowage_arrow::describe::describe(&table);
    }
});
