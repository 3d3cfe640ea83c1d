//! Fuzzes the arrow plugin's IPC *file* reader (framing, schema and layout
//! checks, arrow-ipc decoding with its inline validation) and its `describe`
//! rendering: any bytes give a table or an error, never a panic, abort or
//! out-of-bounds read. Every table that reads is re-validated with
//! `validate_full` as an oracle: reading relies on arrow-ipc's inline
//! validation, and any gap in it is a finding.
//!
//! Decision: strict. The plugin's reader also catches panics from arrow-rs
//! (`catch_unwind`) as a last line of defence, but libfuzzer-sys's panic
//! hook aborts on those too, so any arrow-rs panic the plugin's own checks
//! failed to prevent is reported as a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = stowage_arrow::read_file(data) {
        if let Err(error) = table.validate_full() {
            panic!("read accepted data that validate_full refuses: {error}");
        }
        let _ = stowage_arrow::describe::describe(&table);
    }
});
