//! The wire: a raw IP protocol 112 socket pair for advertisements (RFC 5798 5.1: TTL 255,
//! 224.0.0.18 or unicast peers) and an AF_PACKET socket for gratuitous ARP.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};

use crate::packet::{split_ipv4, Advert, ChecksumMode, DropReason};

/// The VRRP multicast group (RFC 5798 5.1.1.2).
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const PROTO_VRRP: i32 = 112;

/// Advertisements in and out on one interface.
pub struct VrrpSocket {
    /// A raw socket behind tokio's datagram type: `recv` is the same system call.
    rx: tokio::net::UdpSocket,
    tx: Socket,
    src: Ipv4Addr,
    peers: Vec<Ipv4Addr>,
}

/// What a receiver expects of a packet beyond the codec's checks.
#[derive(Clone, Debug)]
pub struct RxFilter {
    pub vrid: u8,
    pub version: crate::packet::Version,
    /// Our advertisement interval in centiseconds (v2 requires the same).
    pub interval_cs: u16,
    /// Our own address (packets from it are ours, looped back).
    pub own: Ipv4Addr,
    /// Unicast peers; empty for multicast.
    pub peers: Vec<Ipv4Addr>,
}

/// Check one packet read from the raw socket: IP header facts, then the codec, then ours.
/// `Ok(None)` is a packet of our own.
pub fn accept(pkt: &[u8], f: &RxFilter) -> Result<Option<(Ipv4Addr, Advert)>, DropReason> {
    let (ip, payload) = split_ipv4(pkt)?;
    if ip.src == f.own {
        return Ok(None);
    }
    // RFC 5798 7.1: the TTL must be 255, so the packet was not routed.
    if ip.ttl != 255 {
        return Err(DropReason::Ttl);
    }
    if f.peers.is_empty() {
        if ip.dst != VRRP_GROUP && ip.dst != f.own {
            return Err(DropReason::Destination);
        }
    } else {
        if !f.peers.contains(&ip.src) {
            return Err(DropReason::Source);
        }
        if ip.dst != f.own && ip.dst != VRRP_GROUP {
            return Err(DropReason::Destination);
        }
    }
    let adv = Advert::decode(payload, ip.src, ip.dst)?;
    if adv.version != f.version {
        return Err(DropReason::Version);
    }
    if adv.vrid != f.vrid {
        return Err(DropReason::Vrid);
    }
    if adv.version == crate::packet::Version::V2 && adv.interval_cs != f.interval_cs {
        return Err(DropReason::Interval);
    }
    Ok(Some((ip.src, adv)))
}

impl VrrpSocket {
    /// Open on interface `ifname` (index `ifindex`), sending from `src`; to `peers`, or to the
    /// VRRP group when there are none.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        src: Ipv4Addr,
        peers: &[Ipv4Addr],
    ) -> io::Result<VrrpSocket> {
        let proto = Some(Protocol::from(PROTO_VRRP));
        let rx = Socket::new(Domain::IPV4, Type::RAW, proto)?;
        rx.bind_device(Some(ifname.as_bytes()))?;
        if peers.is_empty() {
            rx.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex))?;
        }
        rx.set_nonblocking(true)?;

        let tx = Socket::new(Domain::IPV4, Type::RAW, proto)?;
        tx.bind_device(Some(ifname.as_bytes()))?;
        // Bound to our address: the source the v3 pseudo-header checksum is computed with.
        tx.bind(&SockAddr::from(SocketAddrV4::new(src, 0)))?;
        tx.set_multicast_ttl_v4(255)?;
        tx.set_ttl(255)?;
        tx.set_multicast_loop_v4(false)?;
        tx.set_tos(0xc0)?; // internetwork control, as routers send it
        tx.set_multicast_if_v4(&src)?;
        // It never reads: keep what the kernel queues for it small.
        tx.set_recv_buffer_size(0)?;
        tx.set_nonblocking(true)?;
        Ok(VrrpSocket {
            rx: tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(rx))?,
            tx,
            src,
            peers: peers.to_vec(),
        })
    }

    /// Read the next packet (IP header included).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.rx.recv(buf).await
    }

    /// Send `adv` to the group or to every peer.
    pub fn send(&self, adv: &Advert, mode: ChecksumMode) -> io::Result<()> {
        let dsts: Vec<Ipv4Addr> = if self.peers.is_empty() {
            vec![VRRP_GROUP]
        } else {
            self.peers.clone()
        };
        let mut last = Ok(());
        for d in dsts {
            let b = adv.encode(mode, self.src, d);
            if let Err(e) = self
                .tx
                .send_to(&b, &SockAddr::from(SocketAddrV4::new(d, 0)))
            {
                last = Err(e);
            }
        }
        last
    }
}

// ===== gratuitous ARP =====

const ETH_P_ARP: u16 = 0x0806;

/// A gratuitous ARP request for `ip` from `mac` (RFC 5227 3: sender and target IP are both the
/// address; target MAC broadcast, as Keepalived sends it), padded to the Ethernet minimum.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends Ethernet frames out of one interface.
pub struct GarpSocket {
    sock: Socket,
    to: SockAddr,
    mac: [u8; 6],
}

#[allow(unsafe_code)]
fn link_layer_addr(ifindex: u32) -> io::Result<SockAddr> {
    let ll = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
    };
    // SAFETY: `try_init` hands a zeroed sockaddr_storage, which is larger than and aligned for
    // sockaddr_ll; we write a whole sockaddr_ll at its start and give its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            storage.cast::<libc::sockaddr_ll>().write(ll);
            *len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}

impl GarpSocket {
    /// A send-only packet socket on interface `ifindex` whose hardware address is `mac`.
    pub fn open(ifindex: u32, mac: [u8; 6]) -> io::Result<GarpSocket> {
        // Protocol 0: the socket receives nothing.
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        sock.set_nonblocking(true)?;
        Ok(GarpSocket {
            sock,
            to: link_layer_addr(ifindex)?,
            mac,
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// One gratuitous ARP for `ip`.
    pub fn send(&self, ip: Ipv4Addr) -> io::Result<()> {
        self.sock
            .send_to(&garp_frame(self.mac, ip), &self.to)
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Version;

    fn ip_packet(src: [u8; 4], dst: [u8; 4], ttl: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, ttl, 112, 0, 0];
        p[2..4].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn filter(peers: Vec<Ipv4Addr>) -> RxFilter {
        RxFilter {
            vrid: 51,
            version: Version::V3,
            interval_cs: 10,
            own: Ipv4Addr::new(10, 231, 0, 2),
            peers,
        }
    }

    /// Keepalived's v3 advert (interval 10 cs, pseudo-header checksum) from 10.231.0.1.
    const KEEPALIVED_V3: [u8; 12] = [
        0x31, 0x33, 0x96, 0x01, 0x00, 0x0a, 0x41, 0xff, 0x0a, 0xe7, 0x00, 0x64,
    ];

    #[test]
    fn accepts_a_keepalived_advert_and_checks_the_ip_header() {
        let src = [10, 231, 0, 1];
        let good = ip_packet(src, [224, 0, 0, 18], 255, &KEEPALIVED_V3);
        let (from, adv) = accept(&good, &filter(vec![]))
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("refused"));
        assert_eq!(from, Ipv4Addr::from(src));
        assert_eq!((adv.vrid, adv.priority, adv.interval_cs), (51, 150, 10));
        // Routed (TTL 254): dropped.
        let routed = ip_packet(src, [224, 0, 0, 18], 254, &KEEPALIVED_V3);
        assert_eq!(accept(&routed, &filter(vec![])), Err(DropReason::Ttl));
        // Another VRID (checksum fixed up by re-encoding).
        let mut other = adv.clone();
        other.vrid = 52;
        let b = other.encode(ChecksumMode::PseudoHeader, src.into(), VRRP_GROUP);
        let p = ip_packet(src, [224, 0, 0, 18], 255, &b);
        assert_eq!(accept(&p, &filter(vec![])), Err(DropReason::Vrid));
        // Unicast: only configured peers.
        let peers = vec![Ipv4Addr::new(10, 231, 0, 9)];
        assert_eq!(accept(&good, &filter(peers)), Err(DropReason::Source));
        // Our own packet, looped back.
        let own = ip_packet([10, 231, 0, 2], [224, 0, 0, 18], 255, &KEEPALIVED_V3);
        assert_eq!(accept(&own, &filter(vec![])), Ok(None));
        // Garbage.
        assert_eq!(accept(&[0x45, 0, 1], &filter(vec![])), Err(DropReason::Ip));
        let mut short = good.clone();
        short.truncate(24);
        assert_eq!(accept(&short, &filter(vec![])), Err(DropReason::Short));
    }

    #[test]
    fn garp_frame_layout() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = garp_frame(mac, Ipv4Addr::new(10, 231, 0, 100));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac);
        assert_eq!(&f[12..14], &[8, 6]);
        assert_eq!(&f[20..22], &[0, 1], "an ARP request");
        assert_eq!(&f[28..32], &[10, 231, 0, 100]);
        assert_eq!(&f[38..42], &[10, 231, 0, 100]);
    }
}
