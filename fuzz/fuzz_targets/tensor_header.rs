//! Fuzzes the tensor plugin's safetensors header parser: any bytes give a
//! validated header or a `FormatError`, never a panic. Accepted files must
//! describe tensors that tile their data section exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = stowage_tensor::parse(data) {
        let covered: usize = header.tensors.iter().map(|t| t.data.len()).sum();
        assert_eq!(8 + header.header_len + covered, data.len());
    }
    let _ = stowage_tensor::sniff(data);
});
