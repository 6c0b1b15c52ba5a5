//! Concurrency: 200 chain ADDs at once on one network whose bridge does not exist yet, then 200
//! DELs at once; and ADD/DEL/CHECK of the same containers interleaved for a bounded time,
//! first the way a runtime serialises one container's calls, then with no order at all.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use cni_shared::skel::Command;
use cni_tests::testkit::{Sandbox, TempDir};
use serde_json::{json, Value};

use super::store_view::StoreView;
use super::{call, count, links_besides_lo, stats, tagged_entries, veths, with_prev, Rng};

const NET: &str = "ccnet";

struct Net {
    host: Sandbox,
    data: TempDir,
    bridge: Value,
    backend: &'static str,
}

impl Net {
    fn new(label: &str, backend: &'static str) -> Net {
        let host = Sandbox::new(label);
        let data = TempDir::new(label);
        let bridge = json!({
            "cniVersion": "1.1.0", "name": NET, "type": "bridge", "bridge": "cc-br0",
            "isGateway": true, "ipMasq": true, "ipMasqBackend": backend,
            "ipam": {"type": "host-local", "dataDir": data.path(),
                     "ranges": [[{"subnet": "10.94.0.0/16"}]]}
        });
        Net {
            host,
            data,
            bridge,
            backend,
        }
    }

    fn portmap(&self, i: usize, prev: Option<&Value>) -> Value {
        let c = json!({"cniVersion": "1.1.0", "name": NET, "type": "portmap",
            "backend": self.backend, "runtimeConfig": {"portMappings": [
                {"hostPort": 30000 + i, "containerPort": 80, "protocol": "tcp"}]}});
        with_prev(&c, prev)
    }

    fn bridge_call(
        &self,
        cmd: Command,
        id: &str,
        ctr: &Sandbox,
        prev: Option<&Value>,
    ) -> Result<Value, String> {
        call(
            &self.host,
            "bridge",
            cmd,
            &with_prev(&self.bridge, prev),
            id,
            Some(ctr.path()),
        )
        .map_err(|e| format!("bridge {} {id}: {e}", cmd.as_str()))
    }

    fn store(&self) -> StoreView {
        StoreView::read(self.data.path(), NET)
    }
}

/// `n` chain ADDs (bridge + host-local + portmap) at once, then `n` DELs at once.
fn parallel_adds_then_dels(backend: &'static str, n: usize) {
    let n = count(n);
    let net = Net::new(&format!("cc-par-{}", &backend[..3]), backend);
    let ctrs: Vec<Sandbox> = (0..n).map(|_| Sandbox::new("cc-c")).collect();
    let in_flight = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let barrier = Barrier::new(n);
    // One chain ADD (bridge, then portmap with its result) per thread, all released at once.
    let run = |phase: Command| -> Vec<(Result<Value, String>, Duration)> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let (net, ctrs, barrier) = (&net, &ctrs, &barrier);
                    let (in_flight, peak) = (&in_flight, &peak);
                    s.spawn(move || {
                        barrier.wait();
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        let t = Instant::now();
                        let id = format!("cc{i}");
                        let r = match phase {
                            Command::Add => net
                                .bridge_call(Command::Add, &id, &ctrs[i], None)
                                .and_then(|r| {
                                    call(
                                        &net.host,
                                        "portmap",
                                        Command::Add,
                                        &net.portmap(i, Some(&r)),
                                        &id,
                                        Some(ctrs[i].path()),
                                    )
                                    .map_err(|e| format!("portmap ADD {id}: {e}"))
                                }),
                            _ => call(
                                &net.host,
                                "portmap",
                                Command::Del,
                                &net.portmap(i, None),
                                &id,
                                Some(ctrs[i].path()),
                            )
                            .map_err(|e| format!("portmap DEL {id}: {e}"))
                            .and_then(|_| net.bridge_call(Command::Del, &id, &ctrs[i], None)),
                        };
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        (r, t.elapsed())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };

    let t = Instant::now();
    let adds = run(Command::Add);
    let add_time = t.elapsed();
    let failures: Vec<&String> = adds.iter().filter_map(|(r, _)| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} ADDs failed: {failures:#?}",
        failures.len()
    );
    let addrs: Vec<String> = adds
        .iter()
        .map(|(r, _)| {
            r.as_ref().unwrap()["ips"][0]["address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let unique: HashSet<&String> = addrs.iter().collect();
    assert_eq!(unique.len(), n, "duplicate addresses");
    let store = net.store();
    store.assert_consistent(1);
    assert_eq!(store.leases.len(), n);
    assert_eq!(veths(&net.host).len(), n);
    assert_eq!(
        tagged_entries(&net.host, NET).len(),
        n,
        "one tag per attachment"
    );
    let add_peak = peak.swap(0, Ordering::SeqCst);

    let t = Instant::now();
    let dels = run(Command::Del);
    let del_time = t.elapsed();
    let failures: Vec<&String> = dels.iter().filter_map(|(r, _)| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} DELs failed: {failures:#?}",
        failures.len()
    );
    let store = net.store();
    store.assert_consistent(1);
    assert!(store.leases.is_empty(), "{:?}", store.leases);
    assert!(veths(&net.host).is_empty());
    assert!(tagged_entries(&net.host, NET).is_empty());
    for c in &ctrs {
        assert!(links_besides_lo(c).is_empty());
    }
    let durations =
        |v: &[(Result<Value, String>, Duration)]| v.iter().map(|(_, d)| *d).collect::<Vec<_>>();
    eprintln!(
        "{backend}: {n} parallel chain ADDs in {add_time:?} (peak {add_peak} in flight; each {}), \
         {n} parallel DELs in {del_time:?} (peak {}; each {})",
        stats(&durations(&adds)),
        peak.load(Ordering::SeqCst),
        stats(&durations(&dels))
    );
}

#[test]
fn two_hundred_parallel_adds_then_dels_on_one_network() {
    parallel_adds_then_dels("nftables", 200);
}

#[test]
fn parallel_adds_then_dels_with_iptables() {
    parallel_adds_then_dels("iptables", 200);
}

/// What the test believes about one container.
#[derive(Default)]
struct Model {
    /// The result of the ADD that attached it.
    attached: Option<Value>,
}

#[test]
fn interleaved_add_del_check_never_corrupt_host_local() {
    let mut rng = Rng::from_env("interleaved ADD/DEL/CHECK");
    let net = Net::new("cc-mix", "nftables");
    let (n, workers) = (24, 6);
    let ctrs: Vec<Sandbox> = (0..n).map(|_| Sandbox::new("cc-m")).collect();
    let models: Vec<Mutex<Model>> = (0..n).map(|_| Mutex::new(Model::default())).collect();
    let seeds: Vec<u64> = (0..workers).map(|_| rng.next_u64()).collect();
    let ops: Mutex<BTreeMap<String, usize>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let note = |what: String| *ops.lock().unwrap().entry(what).or_default() += 1;

    // Phase 1: like a runtime, one call at a time per container; every outcome is predictable.
    let phase1 = Duration::from_secs(12);
    std::thread::scope(|s| {
        for seed in &seeds {
            let (net, ctrs, models, stop, note) = (&net, &ctrs, &models, &stop, &note);
            s.spawn(move || {
                let mut rng = Rng(*seed | 1);
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(n as u64) as usize;
                    let Ok(mut m) = models[i].try_lock() else {
                        continue;
                    };
                    let id = format!("mx{i}");
                    let verb = [Command::Add, Command::Add, Command::Del, Command::Check]
                        [rng.below(4) as usize];
                    let r = net.bridge_call(verb, &id, &ctrs[i], m.attached.as_ref());
                    match (verb, &m.attached, r) {
                        (Command::Add, None, Ok(v)) => m.attached = Some(v),
                        (Command::Add, Some(_), Err(_)) => {}
                        (Command::Del, _, Ok(_)) => m.attached = None,
                        (Command::Check, Some(_), Ok(_)) | (Command::Check, None, Err(_)) => {}
                        (v, a, r) => {
                            panic!("{} of {id} (attached: {}): {r:?}", v.as_str(), a.is_some())
                        }
                    }
                    note(format!("phase 1 {}", verb.as_str()));
                }
            });
        }
        s.spawn(|| {
            let start = Instant::now();
            while start.elapsed() < phase1 {
                std::thread::sleep(Duration::from_millis(500));
                net.store().assert_consistent(1);
                note("phase 1 store checks".into());
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    // Quiet now: the leases are exactly the attached containers' addresses.
    let store = net.store();
    store.assert_consistent(1);
    let mut expected = BTreeMap::new();
    for (i, m) in models.iter().enumerate() {
        if let Some(r) = &m.lock().unwrap().attached {
            let ip = r["ips"][0]["address"].as_str().unwrap();
            expected.insert(
                (format!("mx{i}"), "eth0".to_string()),
                vec![ip.split('/').next().unwrap().parse().unwrap()],
            );
            net.bridge_call(Command::Check, &format!("mx{i}"), &ctrs[i], Some(r))
                .unwrap();
        }
    }
    assert_eq!(store.owners(), expected, "leases after phase 1");
    assert_eq!(veths(&net.host).len(), expected.len());

    // Phase 2: no order at all, the same container in several calls at once.
    stop.store(false, Ordering::Relaxed);
    std::thread::scope(|s| {
        for seed in &seeds {
            let (net, ctrs, stop, note) = (&net, &ctrs, &stop, &note);
            s.spawn(move || {
                let mut rng = Rng(seed.rotate_left(17) | 1);
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(6) as usize;
                    let verb = [Command::Add, Command::Del, Command::Check][rng.below(3) as usize];
                    let _ = net.bridge_call(verb, &format!("mx{i}"), &ctrs[i], None);
                    note(format!("phase 2 {}", verb.as_str()));
                }
            });
        }
        s.spawn(|| {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(8) {
                std::thread::sleep(Duration::from_millis(500));
                net.store().assert_consistent(1);
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    // Whatever happened, DEL cleans every container, and each can be attached again.
    for (i, c) in ctrs.iter().enumerate() {
        net.bridge_call(Command::Del, &format!("mx{i}"), c, None)
            .unwrap();
        assert!(
            links_besides_lo(c).is_empty(),
            "mx{i}: {:?}",
            links_besides_lo(c)
        );
    }
    let store = net.store();
    store.assert_consistent(1);
    assert!(store.leases.is_empty(), "{:?}", store.leases);
    assert!(veths(&net.host).is_empty());
    // The spec forbids parallel calls for one container, and phase 2 makes them: an ADD can
    // then finish after a DEL of the same container removed its veth, and the masquerade
    // element of an address the attachment no longer has outlives the next DEL (which removes
    // the elements of the addresses it knows, and searches by tag only when it knows none).
    // The runtime's GC removes them.
    let stale = tagged_entries(&net.host, NET);
    let gc = super::with_valid(&net.bridge, &[]);
    call(&net.host, "bridge", Command::Gc, &gc, "", None).unwrap();
    assert!(tagged_entries(&net.host, NET).is_empty());
    let ids: BTreeSet<String> = (0..n).map(|i| format!("mx{i}")).collect();
    for (i, c) in ctrs.iter().enumerate() {
        net.bridge_call(Command::Add, &format!("mx{i}"), c, None)
            .unwrap();
    }
    assert_eq!(net.store().holders(), ids);
    for (i, c) in ctrs.iter().enumerate() {
        net.bridge_call(Command::Del, &format!("mx{i}"), c, None)
            .unwrap();
    }
    assert!(net.store().leases.is_empty());
    eprintln!(
        "interleaved: {:?}; masquerade elements left to GC after phase 2: {stale:?}",
        ops.lock().unwrap()
    );
}
