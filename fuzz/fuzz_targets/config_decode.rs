//! Any stdin, for every verb: the skel's decoding, prevResult, CNI_ARGS and host-local's IPAM
//! config must answer with a value or a CNI error, never a panic.
#![no_main]

use cni_shared::skel::{parse_request, Command};
use libfuzzer_sys::fuzz_target;

const COMMANDS: [Command; 5] = [Command::Add, Command::Del, Command::Check, Command::Status, Command::Gc];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stdin)) = data.split_first() else {
        return;
    };
    let command = COMMANDS[usize::from(selector) % COMMANDS.len()];
    let env = |k: &str| -> Option<String> {
        Some(match k {
            "CNI_CONTAINERID" => "fuzz-ctr".into(),
            "CNI_NETNS" => "/run/netns/fuzz".into(),
            "CNI_IFNAME" => "eth0".into(),
            "CNI_PATH" => "/opt/cni/bin".into(),
            "CNI_ARGS" => "IgnoreUnknown=1;IP=10.0.0.5".into(),
            _ => return None,
        })
    };
    let mut input = stdin;
    if let Ok(req) = parse_request(command, &env, &mut input) {
        let _ = req.prev_result();
        let _ = req.cni_args();
        let _ = req.gc_valid_attachments();
        if let Ok(prev) = req.prev_result() {
            if let Some(prev) = prev {
                let _ = prev.to_value(req.version);
            }
        }
        let _ = host_local::config::IpamConfig::from_request(&req);
        let _ = host_local::config::requested_ips(&req);
    }
});
