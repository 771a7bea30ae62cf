//! `tandem check --keepalived`, fed any text: an error or TOML, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tandem_vrrp::import::keepalived_to_toml(text);
    }
});
