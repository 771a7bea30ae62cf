//! VRRP for tandem: the VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798) advertisement codec, with both
//! v3 checksum conventions, the Initialize/Backup/Master state machine as a decision engine
//! without I/O, and the network side around it: raw IP protocol 112 sockets, virtual addresses
//! through rtnetlink, gratuitous ARP, tracking, metrics and events. `leader` mode ties a VIP to
//! the cluster lease instead of an election; `import` reads Keepalived's configuration.

pub mod config;
pub mod fsm;
pub mod import;
pub mod leader;
pub mod metrics;
pub mod net;
pub mod netlink;
pub mod outputs;
pub mod packet;
pub mod runner;
pub mod track;

pub use config::{VipConfig, VipMode};
pub use fsm::{Action, Config, Event, Instance, State};
pub use leader::{LeaderInstance, Lease};
pub use metrics::VrrpMetrics;
pub use outputs::{VipContext, VipError};
pub use packet::{Advert, ChecksumMode, DropReason, Version};
pub use runner::VrrpInstance;
