//! The proxy part of the config loader: `toml::from_str` into the same shape as the binary's
//! `Config` (minus `[admin]` and `[runtime]`, which live in the binary crate), then
//! `tandem_proxy::config::validate`. Neither may panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use tandem_proxy::config::{validate, BackendConfig, FrontendConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Config {
    #[serde(default)]
    frontend: Vec<FrontendConfig>,
    #[serde(default)]
    backend: Vec<BackendConfig>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let config: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            // The binary reports the span and message of a parse error.
            let _ = (e.span(), e.message());
            return;
        }
    };
    for issue in validate(&config.frontend, &config.backend) {
        // The binary turns each issue path into segments to find its line, and prints it.
        let _ = tandem_core::validate::segments(&issue.path);
        let _ = issue.to_string();
    }
});
