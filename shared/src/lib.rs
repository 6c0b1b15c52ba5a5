//! The common library of the CNI plugin suite. Everything two plugins would otherwise both write
//! lives here; a plugin crate is a thin layer over it.
//!
//! The path of one call: [`skel`] reads the environment and stdin, validates them and dispatches to
//! the plugin's [`skel::Plugin`] implementation; the plugin uses [`invoke`] for IPAM, [`netns`] and
//! `netlink` for the kernel, and returns a [`spec::CniResult`] or a [`CniError`].

pub mod args;
pub mod bridged;
pub mod builtin;
pub mod conntrack;
pub mod container;
pub mod detach;
pub mod error;
pub mod firewall;
pub mod fsutil;
pub mod invoke;
pub mod libcni;
pub mod lock;
pub mod logging;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod nfnl;
pub mod rollback;
pub mod skel;
#[cfg(test)]
mod skel_tests;
pub mod spec;
pub mod sysctl;
pub mod validate;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{code, CniError, Result, ResultExt};
