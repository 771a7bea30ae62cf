//! Shared pieces of the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// A node config with one HTTP frontend `web` on port 0 and backend `app` over `servers`
/// (name, address, backup); `extra` is appended to the `[[backend]]` table.
pub fn lb_config(servers: &[(&str, SocketAddr, bool)], extra: &str) -> String {
    let mut s = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
token_file = "{{dir}}/token"

[runtime]
drain_timeout = "5s"

[[frontend]]
name = "web"
listen = "127.0.0.1:0"
backend = "app"
access_log = false

[[backend]]
name = "app"
retries = 2
connect_timeout = "500ms"
try_timeout = "1s"
{extra}
[backend.health]
check = "http"
path = "/healthz"
interval = "200ms"
timeout = "300ms"
rise = 2
fall = 2
"#
    );
    for (name, addr, backup) in servers {
        s.push_str(&format!(
            "\n[[backend.server]]\nname = \"{name}\"\naddress = \"{addr}\"\nbackup = {backup}\n"
        ));
    }
    s
}

/// Start a node with the test token in `{dir}/token`, waiting for the `web` frontend.
pub fn start_node(config: &str) -> Node {
    Node::start(bin(), config, &["web"], Some(TOKEN))
}

#[allow(unused_imports)]
pub use tandem_testkit::tandem::{DemoBackend, Node};
/// Poll with a deadline (re-exported for brevity).
#[allow(unused_imports)]
pub use tandem_testkit::wait_until;
