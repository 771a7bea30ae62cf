//! The health check's HTTP status line parser, fed whatever a server may send back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_proxy::check::parse_status_line;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(code)) = parse_status_line(data) {
        assert!((100..=599).contains(&code), "status {code} out of range for {data:?}");
    }
});
