//! host-local: the IPAM plugin. Addresses come from configured range sets; leases are files under
//! the data dir in the reference's layout. See README.md for every key. A library (for the fuzz
//! targets and benchmarks) under a one-line binary.

pub mod allocator;
#[cfg(test)]
mod allocator_tests;
pub mod config;
pub mod range;
pub mod resolv;
pub mod store;
mod verbs;

pub use verbs::{HostLocal, ABOUT};

/// The build ID of this host-local (see `build.rs`): in the binary's ELF note, and in the
/// built-in IPAM of the plugins that link this library.
pub const BUILD_ID: [u8; 32] = include!(concat!(env!("OUT_DIR"), "/build_id.rs"));

/// host-local as the built-in IPAM of bridge, vxlan and macvlan: run in-process when the
/// `host-local` in CNI_PATH carries [`BUILD_ID`] (see `cni_shared::builtin`).
pub static BUILTIN: cni_shared::builtin::Builtin = cni_shared::builtin::Builtin {
    name: "host-local",
    build_id: BUILD_ID,
    plugin: &HostLocal,
};
