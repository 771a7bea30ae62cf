//! Choosing loopback ports for processes that must know their addresses before they start
//! (cluster peers, nginx), used by the demo and by tests.

use std::net::TcpListener;

/// Draws free ports on 127.0.0.1 below the kernel's ephemeral range (32768 and up by default),
/// so no outgoing connection can take one before its process binds it, from a block of 500
/// chosen by the process id, so two processes picking at once rarely share a block.
#[derive(Debug)]
pub struct PortPicker {
    state: u64,
    block: u16,
}

impl Default for PortPicker {
    fn default() -> Self {
        Self::new()
    }
}

impl PortPicker {
    pub fn new() -> Self {
        let pid = std::process::id();
        let seed = u64::from(pid).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ crate::clock::unix_millis();
        Self {
            state: seed | 1,
            block: (pid % 24) as u16,
        }
    }

    /// A port that binds now, with the listener holding it (drop it to hand the port over).
    pub fn pick(&mut self) -> Option<(u16, TcpListener)> {
        for _ in 0..1000 {
            // xorshift: enough to spread picks over the block.
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            let port = 20_000 + self.block * 500 + (x % 500) as u16;
            if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                return Some((port, l));
            }
        }
        None
    }
}
