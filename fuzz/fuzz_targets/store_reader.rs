//! Any lease file content, resolv.conf text and address string: host-local's readers never panic.
#![no_main]

use host_local::store::Owner;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let owner = Owner::parse(&text);
    let _ = owner.matches("fuzz-ctr", "eth0");
    let _ = owner.container_id();
    let _ = host_local::resolv::parse(&text);
    let _ = host_local::config::parse_ip_or_cidr(&text);
    let _ = cni_shared::spec::parse_cidr(&text);
});
