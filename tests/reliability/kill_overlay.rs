//! Kill storms on vxlan and macvlan (each with host-local): every ADD SIGKILLed at a random
//! moment, then DEL without a prevResult for the killed ones, missed DELs left to GC with a
//! partial valid list. Nothing may be left: no veth, lease, masquerade entry, vlan
//! sub-interface or record, no interface in a container after its DEL; and every container can
//! be attached again.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cni_shared::skel::Command;
use cni_tests::testkit::{wait_until, Sandbox, TempDir};
use serde_json::{json, Value};

use super::store_view::StoreView;
use super::{
    call, call_or_kill, links_besides_lo, network_rules, stats, tagged_entries, veths, wait_quiet,
    with_prev, with_valid, Rng,
};

/// One plugin with host-local in a sandbox host.
struct Single {
    plugin: &'static str,
    network: &'static str,
    host: Sandbox,
    data: TempDir,
    conf: Value,
    /// Host links besides `lo` that must exist when no container is attached.
    base_links: Vec<String>,
    /// Shared links the plugin creates (removed after the calibration, so that the storm's
    /// first ADDs create them again).
    made: Vec<&'static str>,
}

impl Single {
    fn id(&self, i: usize) -> String {
        format!("{}{i}", &self.plugin[..2])
    }

    fn del(&self, i: usize, ctr: Option<&Sandbox>, prev: Option<&Value>) {
        let id = self.id(i);
        call(
            &self.host,
            self.plugin,
            Command::Del,
            &with_prev(&self.conf, prev),
            &id,
            ctr.map(Sandbox::path),
        )
        .unwrap_or_else(|e| panic!("{} DEL {id}: {e}", self.plugin));
    }

    fn gc(&self, valid: &[String]) {
        let c = with_valid(&self.conf, valid);
        call(&self.host, self.plugin, Command::Gc, &c, "", None)
            .unwrap_or_else(|e| panic!("{} GC: {e}", self.plugin));
    }

    fn add(&self, i: usize, ctr: &Sandbox) -> Value {
        call(
            &self.host,
            self.plugin,
            Command::Add,
            &self.conf,
            &self.id(i),
            Some(ctr.path()),
        )
        .unwrap_or_else(|e| panic!("{} ADD {}: {e}", self.plugin, self.id(i)))
    }

    /// Only the `live` containers hold anything.
    fn assert_only(&self, live: &BTreeSet<String>) {
        let store = StoreView::read(self.data.path(), self.network);
        store.assert_consistent(1);
        assert_eq!(&store.holders(), live, "leases");
        let tags: BTreeSet<String> = tagged_entries(&self.host, self.network)
            .into_keys()
            .map(|t| t.split('/').nth(1).unwrap_or_default().to_string())
            .collect();
        assert!(tags.is_subset(live), "tagged firewall entries: {tags:?}");
        if self.plugin == "vxlan" {
            assert_eq!(veths(&self.host).len(), live.len(), "host veths");
        }
        if live.is_empty() {
            let records: Vec<String> = std::fs::read_dir(self.data.path().join("vlans"))
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".json"))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(records, Vec::<String>::new(), "vlan records");
            let mut links = links_besides_lo(&self.host);
            links.retain(|l| !l.starts_with("veth"));
            assert_eq!(links, self.base_links, "host links");
        }
    }
}

fn storm(s: Single, n: usize) {
    let n = super::count(n);
    let mut rng = Rng::from_env(&format!("kill storm {} ({n})", s.plugin));
    // Calibrate in a throwaway network namespace of the same shape.
    let mut calib = Vec::new();
    for i in 0..5 {
        let ctr = Sandbox::new("ko-cal");
        let t = Instant::now();
        let r = s.add(1000 + i, &ctr);
        calib.push(t.elapsed());
        s.del(1000 + i, Some(&ctr), Some(&r));
    }
    s.gc(&[]);
    for l in &s.made {
        s.host.ip(&["link", "del", l]);
    }
    calib.sort();
    let window = calib[calib.len() / 2] * 3 / 2;
    eprintln!(
        "{} ADD takes {:?}: kills in 0..{window:?}",
        s.plugin, calib[2]
    );

    let started = Instant::now();
    let mut ctrs: Vec<Option<Sandbox>> = Vec::new();
    let mut kept: Vec<Option<Value>> = Vec::new();
    let (mut killed, mut done) = (0, 0);
    for i in 0..n {
        let ctr = Sandbox::new("ko-c");
        let r = call_or_kill(
            &s.host,
            s.plugin,
            &s.conf,
            &s.id(i),
            ctr.path(),
            rng.duration(window),
        );
        if r.is_some() {
            done += 1;
        } else {
            killed += 1;
        }
        let keep = r.is_some() && i % 5 == 3;
        if !keep && i % 5 != 1 {
            s.del(i, Some(&ctr), r.as_ref());
            assert_eq!(
                links_besides_lo(&ctr),
                Vec::<String>::new(),
                "{} after DEL",
                s.id(i)
            );
        }
        ctrs.push(Some(ctr));
        kept.push(if keep { r } else { None });
    }
    wait_quiet(&s.host);
    // The missed DELs: those containers go away, GC keeps the live ones.
    for i in (0..n).filter(|i| i % 5 == 1) {
        ctrs[i] = None;
    }
    let live: BTreeSet<String> = (0..n)
        .filter(|i| kept[*i].is_some())
        .map(|i| s.id(i))
        .collect();
    if s.plugin == "vxlan" {
        assert!(
            wait_until(Duration::from_secs(20), || veths(&s.host).len()
                == live.len()),
            "veths of deleted containers linger: {:?}",
            veths(&s.host)
        );
    }
    s.gc(&live.iter().cloned().collect::<Vec<_>>());
    s.assert_only(&live);
    for (i, r) in kept.iter().enumerate() {
        if let Some(r) = r {
            s.del(i, ctrs[i].as_ref(), Some(r));
        }
    }
    s.gc(&[]);
    s.assert_only(&BTreeSet::new());
    let rules = network_rules(&s.host, s.network);
    assert!(rules.is_empty(), "rules of the network left: {rules:#?}");
    eprintln!(
        "storm: {n} ADDs in {:?}: {killed} killed, {done} completed, {} kept through GC",
        started.elapsed(),
        live.len()
    );

    let mut adds = Vec::new();
    let mut results = Vec::new();
    for (i, slot) in ctrs.iter_mut().enumerate() {
        let ctr = slot.get_or_insert_with(|| Sandbox::new("ko-c2"));
        let t = Instant::now();
        results.push(s.add(i, ctr));
        adds.push(t.elapsed());
    }
    for (i, r) in results.iter().enumerate() {
        s.del(i, ctrs[i].as_ref(), Some(r));
    }
    s.gc(&[]);
    s.assert_only(&BTreeSet::new());
    eprintln!(
        "fresh ADD of all {n}: {}; total {:?}",
        stats(&adds),
        started.elapsed()
    );
}

#[test]
fn kill_storm_vxlan() {
    let host = Sandbox::new("kv");
    let peer = Sandbox::new("kv-peer");
    host.link_to("ul0", &peer, "ul0");
    host.ip(&["addr", "add", "192.0.2.1/24", "dev", "ul0"]);
    let data = TempDir::new("kv");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "kvnet", "type": "vxlan", "vni": 4711,
        "underlay": "ul0", "peers": ["192.0.2.2"], "bridge": "kv-br0", "ipMasq": true,
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.92.0.0/16"}]]}
    });
    let s = Single {
        plugin: "vxlan",
        network: "kvnet",
        host,
        data,
        conf,
        base_links: vec!["ul0".into(), "kv-br0".into(), "vxlan4711".into()],
        made: vec!["vxlan4711", "kv-br0"],
    };
    storm(s, 40);
}

#[test]
fn kill_storm_macvlan() {
    let host = Sandbox::new("km");
    let lan = Sandbox::new("km-lan");
    host.link_to("lan0", &lan, "eth0");
    let data = TempDir::new("km");
    let conf = json!({
        "cniVersion": "1.1.0", "name": "kmnet", "type": "macvlan", "master": "lan0",
        "dataDir": data.path().join("vlans"),
        "ipam": {"type": "host-local", "dataDir": data.path(),
                 "ranges": [[{"subnet": "10.93.0.0/16"}]]}
    });
    let s = Single {
        plugin: "macvlan",
        network: "kmnet",
        host,
        data,
        conf,
        base_links: vec!["lan0".into()],
        made: vec![],
    };
    storm(s, 40);
}
