//! Fuzzes the class-source validator and scanner: any bytes are accepted or
//! refused with an error, never a panic, and what validates is also what
//! `sniff` claims and stays byte-identical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stowage_class_source::{describe, validate, ClassSourcePlugin};
use stowage_plugin_api::{Plugin, SNIFF_PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    let plugin = ClassSourcePlugin;
    let sniffed = plugin.sniff(data.get(..SNIFF_PREFIX_LEN).unwrap_or(data));
    if let Ok(info) = validate::class_source(data) {
        assert_eq!(info.source.as_bytes(), data);
        assert!(data.len() <= validate::MAX_SOURCE_BYTES);
        if data.len() <= SNIFF_PREFIX_LEN {
            assert!(sniffed, "a valid class source was not sniffed");
        }
        assert!(validate::name_matches(info.class_name, info.class_name).is_ok());
        let _ = validate::qualname(info.class_name);
        let _ = describe(info.source, info.class_name, Some("__main__"));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = validate::qualname(text);
        let _ = validate::module(text);
        let _ = validate::name_matches("A", text);
    }
});
