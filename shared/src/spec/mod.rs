//! The CNI specification's types: versions, network configuration, results and their conversion.
//! Ours rather than the archived `cni-plugin` crate: it has no GC/STATUS and rejects valid
//! upper-case container IDs.

pub mod cidr;
pub mod config;
pub mod result;
pub mod version;

#[cfg(test)]
mod result_tests;

pub use cidr::parse_cidr;
pub use config::{decode_config, decode_value, GcAttachment, IpamConf, NetConf};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::Version;
