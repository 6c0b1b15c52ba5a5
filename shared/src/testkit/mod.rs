//! Test support (feature `testkit`; never in a plugin binary): sandbox network namespaces that
//! clean up on drop, a runner that executes built plugin binaries inside a sandbox "host", and
//! bounded connectivity checks between namespaces.
//!
//! Tests never touch the machine's own network namespace: the plugins run inside a sandbox host
//! namespace, containers are further sandboxes, and none of them has a route out of the machine.
//!
//! Test support may panic on a broken test environment; that is how a test fails.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

mod cnitool;
mod connectivity;
mod runner;
mod sandbox;
mod spawn;

pub use cnitool::{Cnitool, CnitoolRun, CNITOOL_TIMEOUT};
pub use connectivity::{ping, tcp_roundtrip, udp_roundtrip, wait_until};
pub use runner::{bin_dir, plugin_path, Call, CallOutput};
pub use sandbox::{require_root, write_executable, Sandbox, TempDir};
pub use spawn::{Outcome, Running, RUN_TIMEOUT};
