//! Kill storm on the bridge + host-local + portmap chain: every chain ADD is SIGKILLed at a
//! random moment, run the way a runtime runs it (bridge ADD, then portmap ADD with bridge's
//! result; the kill hits whichever is running, and a killed bridge's host-local runs on).
//! Then the runtime's cleanup — DEL of the chain in reverse without a prevResult for the
//! killed ones, missed DELs left to GC with a partial valid list — must leave no veth, lease,
//! firewall entry or conntrack entry behind, and a fresh ADD of every container must succeed.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cni_shared::skel::Command;
use cni_tests::testkit::{wait_until, Sandbox, TempDir};
use serde_json::{json, Value};

use super::store_view::StoreView;
use super::{
    call, call_or_kill, conntrack_natted_to, links_besides_lo, network_rules, poke_udp,
    run_or_kill, stats, tagged_entries, veths, wait_quiet, with_prev, with_valid, Rng,
};

const NET: &str = "ksnet";
const PREFIX: &str = "10.91.";
const GATEWAY: &str = "10.91.0.1";

/// What the runtime knows after a chain ADD.
enum Fate {
    BridgeKilled,
    PortmapKilled,
    Completed(Value),
}

/// What the runtime does afterwards (chosen by index, so every fate meets every cleanup).
#[derive(PartialEq)]
enum Cleanup {
    /// DEL right away (racing a killed bridge's host-local).
    Del,
    /// The DEL is lost and the container goes away: GC must clean up.
    Missed,
    /// Still running (when the ADD completed): in the GC's valid list.
    Keep,
}

struct Env {
    host: Sandbox,
    data: TempDir,
    bridge: Value,
    backend: &'static str,
}

impl Env {
    fn new(backend: &'static str) -> Env {
        let host = Sandbox::new(&format!("ks-{}", &backend[..3]));
        let data = TempDir::new("ks");
        let bridge = json!({
            "cniVersion": "1.1.0", "name": NET, "type": "bridge", "bridge": "ks-br0",
            "isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
            "ipam": {"type": "host-local", "dataDir": data.path(),
                     "ranges": [[{"subnet": "10.91.0.0/16"}]]}
        });
        Env {
            host,
            data,
            bridge,
            backend,
        }
    }

    fn portmap(&self, i: usize, prev: Option<&Value>) -> Value {
        let port = 20000 + i;
        let c = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap",
            "backend": self.backend,
            "runtimeConfig": {"portMappings": [
                {"hostPort": port, "containerPort": 80, "protocol": "tcp"},
                {"hostPort": port, "containerPort": 80, "protocol": "udp"}]}});
        with_prev(&c, prev)
    }

    /// The chain ADD, killed `kill_at` after it started (`None`: never).
    fn add(&self, i: usize, ctr: &Sandbox, kill_at: Option<Duration>) -> Fate {
        let id = format!("ks{i}");
        let start = Instant::now();
        let far = Duration::from_secs(3600);
        let Some(r) = call_or_kill(
            &self.host,
            "bridge",
            &self.bridge,
            &id,
            ctr.path(),
            kill_at.unwrap_or(far),
        ) else {
            return Fate::BridgeKilled;
        };
        let rest = kill_at.map_or(far, |k| k.saturating_sub(start.elapsed()));
        let pm = self.portmap(i, Some(&r));
        match call_or_kill(&self.host, "portmap", &pm, &id, ctr.path(), rest) {
            None => Fate::PortmapKilled,
            Some(out) => {
                assert_eq!(out, r, "portmap passes the result through");
                Fate::Completed(r)
            }
        }
    }

    /// The runtime's DEL of the chain, in reverse; `prev` only for a completed ADD.
    fn del(&self, i: usize, ctr: Option<&Sandbox>, prev: Option<&Value>) {
        let id = format!("ks{i}");
        let netns = ctr.map(Sandbox::path);
        let pm = self.portmap(i, prev);
        call(&self.host, "portmap", Command::Del, &pm, &id, netns)
            .unwrap_or_else(|e| panic!("portmap DEL {id}: {e}"));
        let br = with_prev(&self.bridge, prev);
        call(&self.host, "bridge", Command::Del, &br, &id, netns)
            .unwrap_or_else(|e| panic!("bridge DEL {id}: {e}"));
    }

    /// The DEL of the chain, killed `kill_at` after it started (a runtime's DEL timeout).
    fn del_killed(&self, i: usize, ctr: &Sandbox, prev: Option<&Value>, kill_at: Duration) {
        let id = format!("ks{i}");
        let start = Instant::now();
        let pm = self.portmap(i, prev);
        let del = |plugin: &str, conf: &Value, at: Duration| {
            run_or_kill(&self.host, plugin, Command::Del, conf, &id, ctr.path(), at)
        };
        if del("portmap", &pm, kill_at).is_some() {
            let br = with_prev(&self.bridge, prev);
            del("bridge", &br, kill_at.saturating_sub(start.elapsed()));
        }
    }

    /// GC of the chain (portmap, then bridge with host-local) with these containers valid.
    fn gc(&self, valid: &[String]) {
        let pm = with_valid(&self.portmap(0, None), valid);
        call(&self.host, "portmap", Command::Gc, &pm, "", None).expect("portmap GC");
        let br = with_valid(&self.bridge, valid);
        call(&self.host, "bridge", Command::Gc, &br, "", None).expect("bridge GC");
    }

    fn store(&self) -> StoreView {
        StoreView::read(self.data.path(), NET)
    }

    /// Everything of ours in the host must belong to exactly the `live` containers.
    fn assert_only(&self, live: &BTreeSet<String>) {
        let store = self.store();
        store.assert_consistent(1);
        assert_eq!(&store.holders(), live, "leases");
        assert_eq!(veths(&self.host).len(), live.len(), "host veths");
        let tags: BTreeSet<String> = tagged_entries(&self.host, NET)
            .into_keys()
            .map(|t| t.split('/').nth(1).unwrap_or_default().to_string())
            .collect();
        assert_eq!(&tags, live, "tagged firewall entries");
        let natted = conntrack_natted_to(&self.host, PREFIX);
        let ips: BTreeSet<String> = store.leases.keys().map(|ip| format!("src={ip} ")).collect();
        for l in &natted {
            assert!(
                ips.iter().any(|ip| l.contains(ip.as_str())),
                "conntrack entry NATed to a released address: {l}"
            );
        }
    }
}

/// Recent durations of an unkilled chain ADD and DEL.
#[derive(Default)]
struct Timing {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

impl Timing {
    /// One unkilled ADD and DEL of a probe container (ID `ks10000`, host port 30000).
    fn probe(&mut self, env: &Env, ctr: &Sandbox) {
        let t = Instant::now();
        let Fate::Completed(r) = env.add(10000, ctr, None) else {
            unreachable!()
        };
        self.add.push(t.elapsed());
        let t = Instant::now();
        env.del(10000, Some(ctr), Some(&r));
        self.del.push(t.elapsed());
    }

    /// The kill windows: 0 to 1.5 times the mean of the last five ADDs and DELs.
    fn window(&self) -> (Duration, Duration) {
        let mean = |v: &[Duration]| {
            let last: Vec<Duration> = v.iter().rev().take(5).copied().collect();
            last.iter().sum::<Duration>() / last.len().max(1) as u32
        };
        (mean(&self.add) * 3 / 2, mean(&self.del) * 3 / 2)
    }
}

impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, d) = self.window();
        write!(f, "kills fall in 0..{a:?} (ADD), 0..{d:?} (DEL)")
    }
}

fn storm(backend: &'static str, n: usize) {
    let n = super::count(n);
    let mut rng = Rng::from_env(&format!("kill storm bridge+portmap ({backend}, {n})"));
    let env = Env::new(backend);
    // How long an unkilled chain ADD and DEL take here, measured first on a separate network
    // (so that the storm's first ADDs still create the bridge), then again every 10
    // containers on the storm's own network (the machine's load changes).
    let mut timing = Timing::default();
    {
        let e = Env::new(backend);
        let ctr = Sandbox::new("ks-cal-c");
        for _ in 0..5 {
            timing.probe(&e, &ctr);
        }
    }
    eprintln!("{timing}");
    let started = Instant::now();
    let mut ctrs: Vec<Option<Sandbox>> = Vec::new();
    let mut fates = Vec::new();
    let (mut bk, mut pk, mut done, mut natted, mut killed_dels) = (0, 0, 0, 0, 0);
    let cleanup = |i: usize| match i % 5 {
        1 => Cleanup::Missed,
        3 => Cleanup::Keep,
        _ => Cleanup::Del,
    };
    let probe = Sandbox::new("ks-probe");
    for i in 0..n {
        if i % 10 == 9 {
            timing.probe(&env, &probe);
        }
        let ctr = Sandbox::new("ks-c");
        let fate = env.add(i, &ctr, Some(rng.duration(timing.window().0)));
        // Traffic to the port right after the ADD: a conntrack entry NATed to the container
        // whenever the mapping got in before the kill.
        poke_udp(
            &env.host,
            SocketAddr::new(GATEWAY.parse().unwrap(), 20000 + i as u16),
        );
        let port = format!("dport={} ", 20000 + i);
        if conntrack_natted_to(&env.host, PREFIX)
            .iter()
            .any(|l| l.contains(&port))
        {
            natted += 1;
        }
        let prev = match &fate {
            Fate::BridgeKilled => {
                bk += 1;
                None
            }
            Fate::PortmapKilled => {
                pk += 1;
                None
            }
            Fate::Completed(r) => {
                done += 1;
                Some(r.clone())
            }
        };
        let keep = cleanup(i) == Cleanup::Keep && prev.is_some();
        if !keep && cleanup(i) != Cleanup::Missed {
            // Some DELs time out too: killed at a random moment, then retried.
            if i % 5 == 4 {
                env.del_killed(i, &ctr, prev.as_ref(), rng.duration(timing.window().1));
                killed_dels += 1;
            }
            env.del(i, Some(&ctr), prev.as_ref());
            assert_eq!(
                links_besides_lo(&ctr),
                Vec::<String>::new(),
                "ks{i} after DEL"
            );
        }
        ctrs.push(Some(ctr));
        fates.push(if keep { prev } else { None });
    }
    let storm_time = started.elapsed();
    let orphans = wait_quiet(&env.host);
    let leaked_by_del: Vec<String> = env
        .store()
        .holders()
        .into_iter()
        .filter(|id| {
            let i: usize = id[2..].parse().unwrap();
            cleanup(i) == Cleanup::Del
        })
        .collect();
    eprintln!(
        "storm: {n} chain ADDs in {storm_time:?}: {bk} bridge killed, {pk} portmap killed, \
         {done} completed; {killed_dels} DELs killed and retried; {natted} pokes NATed to the \
         container; {timing}; leases left by DEL \
         racing a killed bridge's host-local: {leaked_by_del:?}; orphans done after {orphans:?}"
    );

    // Missed DELs: the containers go away; GC with the live ones as the valid list.
    for i in (0..n).filter(|i| cleanup(*i) == Cleanup::Missed) {
        ctrs[i] = None;
    }
    let live: BTreeSet<String> = (0..n)
        .filter(|i| fates[*i].is_some())
        .map(|i| format!("ks{i}"))
        .collect();
    assert!(
        wait_until(Duration::from_secs(20), || veths(&env.host).len()
            == live.len()),
        "veths of deleted containers linger: {:?}",
        veths(&env.host)
    );
    let t = Instant::now();
    env.gc(&live.iter().cloned().collect::<Vec<_>>());
    eprintln!(
        "GC with {} valid attachments took {:?}",
        live.len(),
        t.elapsed()
    );
    env.assert_only(&live);

    // The live ones end normally; a GC with an empty list finds nothing more.
    for (i, prev) in fates.iter().enumerate() {
        if let Some(p) = prev {
            env.del(i, ctrs[i].as_ref(), Some(p));
        }
    }
    env.gc(&[]);
    env.assert_only(&BTreeSet::new());
    let rules = network_rules(&env.host, NET);
    assert!(rules.is_empty(), "rules of the network left: {rules:#?}");

    // Every container can be attached again, and detached.
    let mut adds = Vec::new();
    let mut results = Vec::new();
    for (i, slot) in ctrs.iter_mut().enumerate() {
        let ctr = slot.get_or_insert_with(|| Sandbox::new("ks-c2"));
        let t = Instant::now();
        match env.add(i, ctr, None) {
            Fate::Completed(r) => results.push(r),
            _ => unreachable!(),
        }
        adds.push(t.elapsed());
    }
    assert_eq!(env.store().holders().len(), n);
    for (i, r) in results.iter().enumerate() {
        env.del(i, ctrs[i].as_ref(), Some(r));
    }
    env.gc(&[]);
    env.assert_only(&BTreeSet::new());
    eprintln!(
        "fresh ADD of all {n}: {}; total {:?}",
        stats(&adds),
        started.elapsed()
    );
}

#[test]
fn kill_storm_bridge_portmap_nftables() {
    storm("nftables", 200);
}

#[test]
fn kill_storm_bridge_portmap_iptables() {
    storm("iptables", 40);
}
