//! Fuzzes the plugins.toml reader: any bytes give a config or an error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = stowage::config::Config::parse(text, std::path::Path::new("fuzz.toml"));
        let _ = stowage::config::EnvToggles::parse(text);
    }
});
