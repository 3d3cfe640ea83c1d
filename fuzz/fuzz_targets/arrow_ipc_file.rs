//! Fuzzes the arrow plugin's IPC *file* reader (framing, schema and layout
//! checks, arrow-ipc decoding, full validation) and its `describe`
//! rendering: any bytes give a table or an error, never a panic, abort or
//! out-of-bounds read.
//!
//! Decision: strict. The plugin's reader also catches panics from arrow-rs
//! (`catch_unwind`) as a last line of defence, but libfuzzer-sys's panic
//! hook aborts on those too, so any arrow-rs panic the plugin's own checks
//! failed to prevent is reported as a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = stowage_arrow::read_file(data) {
        let _ = stowage_arrow::describe::describe(&table);
    }
});
