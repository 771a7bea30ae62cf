//! VRRP for tandem: the VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) advertisement codec, with both
//! v3 checksum conventions, and the Initialize/Backup/Master state machine as a decision engine
//! without I/O. The network side (raw sockets, netlink addresses, gratuitous ARP) is built on
//! these.

pub mod fsm;
pub mod packet;

pub use fsm::{Action, Config, Event, Instance, State};
pub use packet::{Advert, ChecksumMode, DropReason, Version};
