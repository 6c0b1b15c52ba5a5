//! bridge + host-local + portmap, run as a runtime runs it (the `cni_shared::libcni` chain):
//! whole-process latency of one container's ADD and DEL with one port mapping, and of the
//! portmap plugin's own ADD, next to N mappings already installed (by the same portmap, with
//! made-up prevResults, so that thousands cost no containers). Ours with each backend; the
//! reference plugins from /usr/lib/cni when installed, with the ratio.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, Result};
use cni_shared::libcni::{CniConfig, NetworkConfigList, RuntimeConf};
use cni_shared::skel::Command;
use cni_shared::testkit::{bin_dir, Call, Sandbox, TempDir};
use serde_json::{json, Value};

use crate::stats::{ms, Samples};

const REFERENCE: &str = "/usr/lib/cni";

/// One implementation under test.
struct Side {
    label: &'static str,
    dir: PathBuf,
    version: &'static str,
    backend: Option<&'static str>,
}

impl Side {
    fn portmap_conf(&self) -> Value {
        let mut c = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        if let Some(b) = self.backend {
            c["backend"] = json!(b);
        }
        c
    }

    fn list(&self, data: &TempDir) -> Result<NetworkConfigList> {
        let v = json!({"cniVersion": self.version, "name": "bench-pm", "plugins": [
            {"type": "bridge", "bridge": "cni-bpm", "isGateway": true,
             "ipam": {"type": "host-local", "dataDir": data.path(),
                      "ranges": [[{"subnet": "10.202.0.0/16"}]]}},
            self.portmap_conf()
        ]});
        NetworkConfigList::from_bytes(&serde_json::to_vec(&v)?).map_err(|e| anyhow!("{e}"))
    }

    /// portmap alone, as the chain would call it.
    fn portmap(
        &self,
        host: &Sandbox,
        cmd: Command,
        id: &str,
        prev: &Value,
        port: u16,
    ) -> Result<()> {
        let mut c = self.portmap_conf();
        c["cniVersion"] = json!(self.version);
        c["name"] = json!("bench-pm");
        c["runtimeConfig"] = json!({"portMappings": [
            {"hostPort": port, "containerPort": 80, "protocol": "tcp"}]});
        c["prevResult"] = prev.clone();
        let mut call = Call::new("portmap", cmd, c).container(id, "eth0", Some(host.path()));
        call.env.cni_path = vec![self.dir.clone()];
        std::env::set_var("CNI_TEST_BIN_DIR", &self.dir);
        let r = call.run_in(host).map(drop);
        std::env::remove_var("CNI_TEST_BIN_DIR");
        r.map_err(|e| anyhow!("{} portmap {} {id}: {e}", self.label, cmd.as_str()))
    }
}

/// A prevResult for a made-up attachment `i` (no container behind it).
fn fake_prev(version: &str, i: u32) -> Value {
    json!({"cniVersion": version,
           "interfaces": [{"name": "eth0", "sandbox": "/run/netns/none"}],
           "ips": [{"address": format!("10.202.{}.{}/16", 100 + i / 250, i % 250 + 2),
                    "interface": 0}]})
}

#[derive(Default)]
struct Level {
    chain_add: Samples,
    chain_del: Samples,
    portmap_add: Samples,
}

fn measure(side: &Side, levels: &[u32], rounds: u32) -> Result<Vec<(u32, Level)>> {
    let host = Sandbox::new("bench-pm");
    let ctr = Sandbox::new("bench-pm-c");
    let (data, cache) = (TempDir::new("bench-pm"), TempDir::new("bench-pm-cache"));
    let list = side.list(&data)?;
    let cni = CniConfig::new(vec![side.dir.clone()], cache.path());
    let ns = host.netns();
    let mut installed = 0;
    let mut out = Vec::new();
    for &level in levels {
        let t = Instant::now();
        while installed < level {
            let prev = fake_prev(side.version, installed);
            let port = 10000 + u16::try_from(installed)?;
            side.portmap(
                &host,
                Command::Add,
                &format!("fill{installed}"),
                &prev,
                port,
            )?;
            installed += 1;
        }
        eprintln!(
            "  {}: {installed} mappings installed ({:.1} s)",
            side.label,
            t.elapsed().as_secs_f64()
        );
        let mut l = Level::default();
        for r in 0..rounds {
            let rt = RuntimeConf {
                container_id: format!("x{r}"),
                netns: ctr.path().display().to_string(),
                ifname: "eth0".into(),
                args: Vec::new(),
                capability_args: json!({"portMappings": [
                    {"hostPort": 9999, "containerPort": 80, "protocol": "tcp"}]})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            };
            let t = Instant::now();
            let result = ns.run(|| cni.add_network_list(&list, &rt))??;
            l.chain_add.push(t.elapsed());
            side.portmap(&host, Command::Del, &rt.container_id, &result, 9999)?;
            let t = Instant::now();
            side.portmap(&host, Command::Add, &rt.container_id, &result, 9999)?;
            l.portmap_add.push(t.elapsed());
            let t = Instant::now();
            ns.run(|| cni.del_network_list(&list, &rt))??;
            l.chain_del.push(t.elapsed());
        }
        out.push((level, l));
    }
    Ok(out)
}

pub fn run(levels: &[u32], rounds: u32) -> Result<()> {
    let mut sides = vec![
        Side {
            label: "ours nftables",
            dir: bin_dir(),
            version: "1.1.0",
            backend: None,
        },
        Side {
            label: "ours iptables",
            dir: bin_dir(),
            version: "1.1.0",
            backend: Some("iptables"),
        },
    ];
    if Path::new(REFERENCE).join("portmap").is_file() {
        sides.push(Side {
            label: "reference",
            dir: PathBuf::from(REFERENCE),
            version: "1.0.0",
            backend: None,
        });
    } else {
        println!("(reference plugins not installed in {REFERENCE}: no comparison)");
    }
    let mut all = Vec::new();
    for side in &sides {
        let m = measure(side, levels, rounds)?;
        for (level, l) in &m {
            let at = format!("{} @ {level:>4} mappings", side.label);
            println!("chain ADD   {at:<32}: {}", l.chain_add.summary());
            println!("portmap ADD {at:<32}: {}", l.portmap_add.summary());
            println!("chain DEL   {at:<32}: {}", l.chain_del.summary());
        }
        all.push(m);
    }
    if let Some(reference) = all.get(2) {
        let med = |s: &Samples| ms(s.quantile(0.5)).max(0.001);
        for (i, (level, r)) in reference.iter().enumerate() {
            let (n, ipt) = (&all[0][i].1, &all[1][i].1);
            println!(
                "median ratio reference/ours @ {level:>4}: portmap ADD {:.1}x (nftables), {:.1}x \
                 (iptables); chain ADD {:.1}x, {:.1}x; chain DEL {:.1}x, {:.1}x",
                med(&r.portmap_add) / med(&n.portmap_add),
                med(&r.portmap_add) / med(&ipt.portmap_add),
                med(&r.chain_add) / med(&n.chain_add),
                med(&r.chain_add) / med(&ipt.chain_add),
                med(&r.chain_del) / med(&n.chain_del),
                med(&r.chain_del) / med(&ipt.chain_del),
            );
        }
    }
    Ok(())
}
