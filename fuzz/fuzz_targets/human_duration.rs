//! `"500ms"`, `"1m30s"`, `"1.5s"`: `str::parse::<HumanDuration>()` and its `Display`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_core::HumanDuration;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match s.parse::<HumanDuration>() {
        Ok(d) => {
            let _ = d.to_string();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
