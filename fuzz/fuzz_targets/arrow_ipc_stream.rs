//! Fuzzes the arrow plugin's IPC *stream* reader (message framing, schema
//! and layout checks, arrow-ipc decoding with its inline validation) and the format
//! sniffer: any bytes give a table or an error, never a panic, abort or
//! out-of-bounds read. Every table that reads is re-validated with
//! `validate_full` as an oracle: reading relies on arrow-ipc's inline
//! validation, and any gap in it is a finding.
//!
//! Decision: strict, as in `arrow_ipc_file.rs`: a panic arrow-rs raises
//! inside the plugin's `catch_unwind` guard still aborts here (a finding).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stowage_arrow::read::detect(data);
    if let Ok(table) = stowage_arrow::read_stream(data) {
        if let Err(error) = table.validate_full() {
            panic!("read accepted data that validate_full refuses: {error}");
        }
        let _ = stowage_arrow::describe::describe(&table);
    }
});
