//! The allocator against a real directory: round robin, dual-stack all-or-nothing, requested
//! addresses, exhaustion, release through the index and by scan, GC.

use std::net::IpAddr;
use std::path::PathBuf;

use cni_shared::spec::parse_cidr;

use crate::allocator::{self, codes};
use crate::config::IpamConfig;
use crate::range::{Range, RangeSet, RangeSpec};
use crate::store::Store;

struct Dir(PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(label: &str) -> Dir {
    let p = std::env::temp_dir().join(format!(
        "hl-test-{}-{label}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&p);
    Dir(p)
}

fn set(subnet: &str, start: Option<&str>, end: Option<&str>) -> RangeSet {
    let spec = RangeSpec {
        subnet: Some(parse_cidr(subnet).unwrap()),
        range_start: start.map(|s| s.parse().unwrap()),
        range_end: end.map(|s| s.parse().unwrap()),
        gateway: None,
    };
    RangeSet::new(vec![Range::canonical(&spec, "r").unwrap()], "s").unwrap()
}

fn cfg(dir: &Dir, sets: Vec<RangeSet>) -> IpamConfig {
    IpamConfig {
        network: "testnet".into(),
        range_sets: sets,
        routes: vec![],
        data_dir: dir.0.clone(),
        resolv_conf: None,
        exclude: vec![],
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn addrs(a: &[allocator::Allocation]) -> Vec<String> {
    a.iter().map(|x| x.address.to_string()).collect()
}

fn files(c: &IpamConfig) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(c.network_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

#[test]
fn round_robin_with_gateway_skipped_and_reference_file_format() {
    let d = tmp("rr");
    let c = cfg(&d, vec![set("10.0.0.0/29", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let a = allocator::allocate(&c, &s, "c1", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.0.0.2/29"]);
    assert_eq!(a[0].gateway, Some(ip("10.0.0.1")));
    let b = allocator::allocate(&c, &s, "c2", "eth0", &[]).unwrap();
    assert_eq!(addrs(&b), ["10.0.0.3/29"]);
    assert_eq!(
        std::fs::read_to_string(c.network_dir().join("10.0.0.2")).unwrap(),
        "c1\r\neth0"
    );
    assert_eq!(
        std::fs::read_to_string(c.network_dir().join("last_reserved_ip.0")).unwrap(),
        "10.0.0.3"
    );
    // Released addresses are not reused before the range wraps.
    allocator::release(&s, "c1", "eth0").unwrap();
    let e = allocator::allocate(&c, &s, "c3", "eth0", &[]).unwrap();
    assert_eq!(addrs(&e), ["10.0.0.4/29"]);
}

#[test]
fn exhaustion_names_the_range_and_changes_nothing() {
    let d = tmp("full");
    let c = cfg(
        &d,
        vec![set("10.0.0.0/24", Some("10.0.0.10"), Some("10.0.0.11"))],
    );
    let s = Store::open_locked(&c.network_dir()).unwrap();
    allocator::allocate(&c, &s, "a", "eth0", &[]).unwrap();
    allocator::allocate(&c, &s, "b", "eth0", &[]).unwrap();
    let before = files(&c);
    let e = allocator::allocate(&c, &s, "c", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, codes::POOL_EXHAUSTED);
    assert!(
        e.msg.contains("10.0.0.0/24 (10.0.0.10-10.0.0.11)"),
        "{}",
        e.msg
    );
    assert_eq!(files(&c), before);
    assert!(s.index_get("c", "eth0").is_none());
}

#[test]
fn dual_stack_is_all_or_nothing() {
    let d = tmp("ds");
    let c = cfg(
        &d,
        vec![
            set("10.0.0.0/24", None, None),
            set("fd00::/120", Some("fd00::10"), Some("fd00::10")),
        ],
    );
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let a = allocator::allocate(&c, &s, "a", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.0.0.2/24", "fd00::10/120"]);
    let e = allocator::allocate(&c, &s, "b", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, codes::POOL_EXHAUSTED);
    assert_eq!(
        files(&c),
        ["10.0.0.2", "fd00::10"],
        "b's IPv4 lease was rolled back"
    );
}

#[test]
fn requested_addresses() {
    let d = tmp("req");
    let c = cfg(
        &d,
        vec![set("10.0.0.0/24", None, None), set("fd00::/64", None, None)],
    );
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let a = allocator::allocate(&c, &s, "a", "eth0", &[ip("10.0.0.50"), ip("fd00::50")]).unwrap();
    assert_eq!(addrs(&a), ["10.0.0.50/24", "fd00::50/64"]);
    // Only v4 requested: v6 allocated normally.
    let b = allocator::allocate(&c, &s, "b", "eth0", &[ip("10.0.0.51")]).unwrap();
    assert_eq!(b[0].address.to_string(), "10.0.0.51/24");
    let taken = allocator::allocate(&c, &s, "x", "eth0", &[ip("10.0.0.50")]).unwrap_err();
    assert_eq!(taken.code, codes::ADDRESS_IN_USE);
    assert!(
        taken.msg.contains("10.0.0.50") && taken.msg.contains("container a"),
        "{}",
        taken.msg
    );
    for (bad, what) in [
        ("10.0.0.1", "gateway"),
        ("10.9.0.1", "no range"),
        ("10.0.0.255", "no range"),
    ] {
        let e = allocator::allocate(&c, &s, "x", "eth0", &[ip(bad)]).unwrap_err();
        assert_eq!(e.code, 7, "{bad}");
        assert!(e.msg.contains(bad) && e.msg.contains(what), "{}", e.msg);
    }
    let two = allocator::allocate(&c, &s, "x", "eth0", &[ip("10.0.0.60"), ip("10.0.0.61")]);
    assert_eq!(two.unwrap_err().code, 7);
    assert!(s.index_get("x", "eth0").is_none());
}

#[test]
fn excluded_addresses_are_never_handed_out() {
    let d = tmp("excl");
    let mut c = cfg(&d, vec![set("10.0.0.0/28", None, None)]);
    c.exclude = vec![
        parse_cidr("10.0.0.2/32").unwrap(),
        parse_cidr("10.0.0.4/31").unwrap(),
    ];
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let got: Vec<String> = (0..3)
        .map(|i| {
            addrs(&allocator::allocate(&c, &s, &format!("c{i}"), "eth0", &[]).unwrap())[0].clone()
        })
        .collect();
    assert_eq!(got, ["10.0.0.3/28", "10.0.0.6/28", "10.0.0.7/28"]);
    let e = allocator::allocate(&c, &s, "y", "eth0", &[ip("10.0.0.5")]).unwrap_err();
    assert!(e.msg.contains("excluded"), "{}", e.msg);
}

#[test]
fn second_add_of_the_same_attachment_is_refused() {
    let d = tmp("dup");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    allocator::allocate(&c, &s, "a", "eth0", &[]).unwrap();
    let e = allocator::allocate(&c, &s, "a", "eth0", &[]).unwrap_err();
    assert_eq!(e.code, codes::ADDRESS_IN_USE);
    // Another interface of the same container is a different attachment.
    allocator::allocate(&c, &s, "a", "net1", &[]).unwrap();
}

#[test]
fn release_finds_reference_written_leases_by_scan() {
    let d = tmp("compat");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    // As the reference writes them: no index entry; one new-style, one old-style (ID only).
    std::fs::write(c.network_dir().join("10.0.0.7"), "ref1\r\neth0").unwrap();
    std::fs::write(c.network_dir().join("10.0.0.8"), "ref2").unwrap();
    assert_eq!(
        allocator::held_by(&s, "ref1", "eth0").unwrap(),
        [ip("10.0.0.7")]
    );
    assert_eq!(
        allocator::release(&s, "ref1", "eth0").unwrap(),
        [ip("10.0.0.7")]
    );
    assert_eq!(
        allocator::release(&s, "ref2", "eth0").unwrap(),
        [ip("10.0.0.8")]
    );
    assert!(files(&c).is_empty());
    // Released twice: nothing to do, no error.
    assert!(allocator::release(&s, "ref1", "eth0").unwrap().is_empty());
}

#[test]
fn garbage_lease_files_are_skipped_not_fatal() {
    let d = tmp("garbage");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    std::fs::write(c.network_dir().join("10.0.0.2"), "").unwrap();
    std::fs::write(c.network_dir().join("10.0.0.3"), "a\nb\nc\nd").unwrap();
    let a = allocator::allocate(&c, &s, "a", "eth0", &[]).unwrap();
    assert_eq!(addrs(&a), ["10.0.0.4/24"]);
    let released = allocator::collect_garbage(&s, &[]).unwrap();
    assert_eq!(released, [ip("10.0.0.4")]);
    assert_eq!(
        files(&c),
        ["10.0.0.2", "10.0.0.3"],
        "garbage is reported, not deleted"
    );
}

#[test]
fn gc_releases_garbage_lease_files_from_before_the_boot() {
    let d = tmp("garbage-boot");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let old = c.network_dir().join("10.0.0.2");
    std::fs::write(&old, "").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1))
        .unwrap();
    std::fs::write(c.network_dir().join("10.0.0.3"), "").unwrap();
    let released = allocator::collect_garbage(&s, &[]).unwrap();
    assert_eq!(released, [ip("10.0.0.2")], "what a crash left is released");
    assert_eq!(files(&c), ["10.0.0.3"], "recent garbage stays");
}

#[test]
fn gc_releases_exactly_the_stale_attachments() {
    let d = tmp("gc");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    for id in ["keep", "drop1", "drop2"] {
        allocator::allocate(&c, &s, id, "eth0", &[]).unwrap();
    }
    std::fs::write(c.network_dir().join("10.0.0.100"), "legacykeep").unwrap();
    let valid = vec![
        ("keep".to_string(), "eth0".to_string()),
        ("legacykeep".into(), "eth0".into()),
    ];
    let mut released = allocator::collect_garbage(&s, &valid).unwrap();
    released.sort();
    assert_eq!(released, [ip("10.0.0.3"), ip("10.0.0.4")]);
    assert_eq!(files(&c), ["10.0.0.100", "10.0.0.2"]);
    assert!(s.index_get("drop1", "eth0").is_none());
    assert!(s.index_get("keep", "eth0").is_some());
}

#[test]
fn long_container_ids_get_a_hashed_index_name() {
    let d = tmp("long");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let id = "a".repeat(600);
    allocator::allocate(&c, &s, &id, "eth0", &[]).unwrap();
    assert_eq!(s.index_get(&id, "eth0").unwrap(), [ip("10.0.0.2")]);
    assert_eq!(
        allocator::release(&s, &id, "eth0").unwrap(),
        [ip("10.0.0.2")]
    );
}

#[test]
fn gc_reads_the_index_by_name_and_hashed_names_by_content() {
    let d = tmp("gc-index");
    let c = cfg(&d, vec![set("10.0.0.0/24", None, None)]);
    let s = Store::open_locked(&c.network_dir()).unwrap();
    let (long_keep, long_drop) = ("k".repeat(300), "d".repeat(300));
    for id in [
        long_keep.as_str(),
        long_drop.as_str(),
        "short-drop",
        "short-keep",
    ] {
        allocator::allocate(&c, &s, id, "eth0", &[]).unwrap();
    }
    // An index entry whose attachment holds no lease any more (a crash between the two
    // removals) goes too when the attachment is not valid.
    s.index_put("orphan", "eth1", &[ip("10.0.0.99")]).unwrap();
    let valid = vec![
        (long_keep.clone(), "eth0".to_string()),
        ("short-keep".into(), "eth0".into()),
    ];
    let mut released = allocator::collect_garbage(&s, &valid).unwrap();
    released.sort();
    assert_eq!(released, [ip("10.0.0.3"), ip("10.0.0.4")]);
    assert!(s.index_get(&long_keep, "eth0").is_some());
    assert!(s.index_get("short-keep", "eth0").is_some());
    for (id, ifname) in [
        (long_drop.as_str(), "eth0"),
        ("short-drop", "eth0"),
        ("orphan", "eth1"),
    ] {
        assert!(s.index_get(id, ifname).is_none(), "{id} {ifname}");
    }
    let mut names: Vec<String> = std::fs::read_dir(c.network_dir().join(".attachments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"short-keep@eth0".to_string()));
    assert!(names.iter().any(|n| n.starts_with('~')), "{names:?}");
}
