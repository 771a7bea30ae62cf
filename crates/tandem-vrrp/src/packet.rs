//! VRRP advertisements, both ways. A decoded packet is only ever a valid one: anything else is
//! a `DropReason`, counted by the caller.

use std::net::Ipv4Addr;

/// VRRP protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V2,
    V3,
}

/// How the VRRPv3 checksum is computed (v2 never uses a pseudo-header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumMode {
    /// With the IPv4 pseudo-header, as RFC 5798 5.2.8 says and Keepalived does by default.
    PseudoHeader,
    /// Over the VRRP message only (RFC 9568, Cisco, Juniper; Keepalived `v3_checksum_as_v2`).
    Rfc9568,
}

/// One advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub version: Version,
    pub vrid: u8,
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2 carries whole seconds: multiples of 100).
    pub interval_cs: u16,
    pub addresses: Vec<Ipv4Addr>,
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    #[error("shorter than a VRRP header")]
    Short,
    #[error("shorter than its address count says")]
    Truncated,
    #[error("unknown VRRP version")]
    Version,
    #[error("not an advertisement")]
    Type,
    #[error("bad checksum")]
    Checksum,
    #[error("no address, or more than the packet can hold")]
    AddressCount,
    #[error("authentication does not match (v2)")]
    Auth,
    #[error("IP TTL is not 255")]
    Ttl,
    #[error("another virtual router id")]
    Vrid,
    #[error("advertisement interval differs from ours (v2)")]
    Interval,
    #[error("sender is not a configured unicast peer")]
    Source,
    #[error("sent to an address that is neither 224.0.0.18 nor ours")]
    Destination,
    #[error("not a well-formed IPv4 packet carrying VRRP")]
    Ip,
}

impl DropReason {
    /// The `reason` label in metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Short => "short",
            DropReason::Truncated => "truncated",
            DropReason::Version => "version",
            DropReason::Type => "type",
            DropReason::Checksum => "checksum",
            DropReason::AddressCount => "address_count",
            DropReason::Auth => "auth",
            DropReason::Ttl => "ttl",
            DropReason::Vrid => "vrid",
            DropReason::Interval => "interval",
            DropReason::Source => "source",
            DropReason::Destination => "destination",
            DropReason::Ip => "ip",
        }
    }

    /// Every reason, for creating the series up front.
    pub const ALL: [DropReason; 13] = [
        DropReason::Short,
        DropReason::Truncated,
        DropReason::Version,
        DropReason::Type,
        DropReason::Checksum,
        DropReason::AddressCount,
        DropReason::Auth,
        DropReason::Ttl,
        DropReason::Vrid,
        DropReason::Interval,
        DropReason::Source,
        DropReason::Destination,
        DropReason::Ip,
    ];
}

/// The parts of an IPv4 header a VRRP receiver checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

/// Split a packet read from a raw IPv4 socket into its header facts and the VRRP payload.
pub fn split_ipv4(b: &[u8]) -> Result<(IpInfo, &[u8]), DropReason> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return Err(DropReason::Ip);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if ihl < 20 || b.len() < ihl || b[9] != 112 {
        return Err(DropReason::Ip);
    }
    // The kernel hands raw sockets the whole datagram; trust the shorter of the two lengths.
    let end = if total >= ihl {
        total.min(b.len())
    } else {
        b.len()
    };
    let info = IpInfo {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        ttl: b[8],
    };
    Ok((info, &b[ihl..end]))
}

const V2_AUTH_LEN: usize = 8;

/// The Internet checksum (RFC 1071) of `parts` concatenated.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &b in *p {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> [u8; 12] {
    let mut ph = [0u8; 12];
    ph[..4].copy_from_slice(&src.octets());
    ph[4..8].copy_from_slice(&dst.octets());
    ph[9] = 112;
    ph[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    ph
}

impl Advert {
    /// Encode; `src`/`dst` are the IP addresses the packet will carry (for the v3 pseudo-header).
    pub fn encode(&self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + 4 * self.addresses.len() + V2_AUTH_LEN);
        let count = self.addresses.len().min(255) as u8;
        match self.version {
            Version::V2 => {
                let secs = (self.interval_cs / 100).clamp(1, 255) as u8;
                b.extend_from_slice(&[0x21, self.vrid, self.priority, count, 0, secs, 0, 0]);
            }
            Version::V3 => {
                let [hi, lo] = (self.interval_cs & 0x0fff).to_be_bytes();
                b.extend_from_slice(&[0x31, self.vrid, self.priority, count, hi, lo, 0, 0]);
            }
        }
        for a in self.addresses.iter().take(255) {
            b.extend_from_slice(&a.octets());
        }
        if self.version == Version::V2 {
            b.extend_from_slice(&[0u8; V2_AUTH_LEN]);
        }
        let sum = match (self.version, mode) {
            (Version::V3, ChecksumMode::PseudoHeader) => {
                checksum(&[&pseudo_header(src, dst, b.len()), &b])
            }
            _ => checksum(&[&b]),
        };
        b[6..8].copy_from_slice(&sum.to_be_bytes());
        b
    }

    /// Decode a VRRP message (the IP payload) received from `src` to `dst`. A v3 checksum is
    /// accepted in either convention, so tandem interoperates with both kinds of peers.
    pub fn decode(b: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Result<Advert, DropReason> {
        if b.len() < 8 {
            return Err(DropReason::Short);
        }
        let version = match b[0] >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            _ => return Err(DropReason::Version),
        };
        if b[0] & 0x0f != 1 {
            return Err(DropReason::Type);
        }
        let count = usize::from(b[3]);
        if count == 0 {
            return Err(DropReason::AddressCount);
        }
        let need = 8
            + 4 * count
            + if version == Version::V2 {
                V2_AUTH_LEN
            } else {
                0
            };
        if b.len() < need {
            return Err(DropReason::Truncated);
        }
        let msg = &b[..need];
        let ok = match version {
            Version::V2 => checksum(&[msg]) == 0,
            Version::V3 => {
                checksum(&[&pseudo_header(src, dst, msg.len()), msg]) == 0 || checksum(&[msg]) == 0
            }
        };
        if !ok {
            return Err(DropReason::Checksum);
        }
        let interval_cs = match version {
            Version::V2 => {
                // Only "no authentication" is supported (RFC 3768 removed the others' use).
                if b[4] != 0 {
                    return Err(DropReason::Auth);
                }
                u16::from(b[5]) * 100
            }
            Version::V3 => u16::from_be_bytes([b[4], b[5]]) & 0x0fff,
        };
        let addresses = (0..count)
            .map(|i| {
                let o = 8 + 4 * i;
                Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3])
            })
            .collect();
        Ok(Advert {
            version,
            vrid: b[1],
            priority: b[2],
            interval_cs,
            addresses,
        })
    }
}

#[cfg(test)]
mod tests;
