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
