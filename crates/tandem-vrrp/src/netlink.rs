//! Interfaces and addresses through rtnetlink: look up a link (index, MAC, carrier), list its
//! IPv4 addresses, add and remove the virtual addresses. Adding an address that is there, or
//! removing one that is gone, is not an error: both are the state we want.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::stream::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, CacheInfo};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use tandem_core::TaskHandle;

use crate::config::VipAddr;

/// Errors talking to the kernel.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("interface {0:?} does not exist")]
    NoInterface(String),
    #[error("interface {0:?} has no hardware address")]
    NoMac(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub mac: [u8; 6],
    /// Administratively up with carrier (IFF_UP and IFF_LOWER_UP).
    pub up: bool,
}

/// A netlink connection, with its driver task.
#[derive(Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    _conn: std::sync::Arc<TaskHandle>,
}

const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
const ENODEV: i32 = 19;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn nl(e: rtnetlink::Error) -> NetError {
    NetError::Netlink(e.to_string())
}

impl Netlink {
    /// Open a connection in this process's network namespace (needs a tokio runtime).
    pub fn new() -> Result<Netlink, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        Ok(Netlink {
            handle,
            _conn: std::sync::Arc::new(TaskHandle::spawn(conn)),
        })
    }

    /// Look up `name`.
    pub async fn link(&self, name: &str) -> Result<Link, NetError> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        let msg = match links.try_next().await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(NetError::NoInterface(name.into())),
            Err(e) if errno(&e) == Some(ENODEV) => return Err(NetError::NoInterface(name.into())),
            Err(e) => return Err(nl(e)),
        };
        let mac = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::Address(m) if m.len() == 6 => {
                    let mut b = [0u8; 6];
                    b.copy_from_slice(m);
                    Some(b)
                }
                _ => None,
            })
            .ok_or_else(|| NetError::NoMac(name.into()))?;
        let flags = msg.header.flags;
        Ok(Link {
            index: msg.header.index,
            mac,
            up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp),
        })
    }

    /// IPv4 addresses on link `index`, with prefix lengths, in the kernel's order (primary
    /// addresses first).
    pub async fn ipv4_addrs(&self, index: u32) -> Result<Vec<VipAddr>, NetError> {
        let mut out = Vec::new();
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if let Some(ip) = local_v4(&m) {
                out.push(VipAddr {
                    ip,
                    prefix: m.header.prefix_len,
                });
            }
        }
        Ok(out)
    }

    /// Add `a` to link `index`, or refresh it if it is there. With `lifetime` (seconds), the
    /// kernel removes the address by itself once that passes without a refresh: a process that
    /// is killed or hangs does not leave it behind for good.
    pub async fn add(&self, index: u32, a: VipAddr, lifetime: Option<u32>) -> Result<(), NetError> {
        let mut req = self
            .handle
            .address()
            .add(index, IpAddr::V4(a.ip), a.prefix)
            .replace();
        if let Some(secs) = lifetime {
            let mut info = CacheInfo::default();
            info.ifa_preferred = secs;
            info.ifa_valid = secs;
            req.message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(info));
        }
        match req.execute().await {
            Err(e) if errno(&e) != Some(EEXIST) => Err(nl(e)),
            _ => Ok(()),
        }
    }

    /// Remove `a` from link `index` (not there: fine).
    pub async fn del(&self, index: u32, a: VipAddr) -> Result<(), NetError> {
        let mut s = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute();
        let mut found = Vec::new();
        while let Some(m) = s.try_next().await.map_err(nl)? {
            if local_v4(&m) == Some(a.ip) {
                found.push(m);
            }
        }
        for m in found {
            match self.handle.address().del(m).execute().await {
                Err(e) if errno(&e) != Some(EADDRNOTAVAIL) => return Err(nl(e)),
                _ => {}
            }
        }
        Ok(())
    }
}

fn local_v4(m: &AddressMessage) -> Option<Ipv4Addr> {
    // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    })
}
