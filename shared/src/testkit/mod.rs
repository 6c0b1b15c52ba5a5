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

/// A request of `command` as the skel parses it from `conf` on stdin, with the attachment `c1`
/// / `eth0` in `/run/netns/x`, CNI_PATH `/opt/cni/bin` and CNI_ARGS `args`: for unit tests of a
/// plugin's configuration.
pub fn request(
    command: crate::skel::Command,
    conf: &serde_json::Value,
    args: &str,
) -> crate::skel::Request {
    let env = |k: &str| -> Option<String> {
        match k {
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            "CNI_ARGS" => Some(args.into()),
            _ => None,
        }
    };
    let bytes = serde_json::to_vec(conf).expect("a JSON value encodes");
    crate::skel::parse_request(command, &env, &mut bytes.as_slice())
        .unwrap_or_else(|e| panic!("parsing the test request: {e}"))
}
