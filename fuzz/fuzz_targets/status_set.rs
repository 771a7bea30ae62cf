//! `expect = "200-399"` / `"200,204"`: `StatusSet::parse` and lookups in what it returns.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_proxy::config::StatusSet;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(set) = StatusSet::parse(s) {
        for code in [0, 99, 100, 200, 204, 399, 404, 599, 600, u16::MAX] {
            let _ = set.contains(code);
        }
    }
});
