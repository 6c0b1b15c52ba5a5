//! One demo network: a sandbox host, the example configuration from conf/ (its lease directory
//! moved to a temp dir), a result cache, and cnitool to drive it like a runtime.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use cni_shared::testkit::{bin_dir, Cnitool, Sandbox, TempDir};
use serde_json::Value;

pub fn conf_dir() -> PathBuf {
    // scripts/demo.sh runs from the repository root.
    PathBuf::from("conf")
}

/// Whether a plugin binary has been built (sections of plugins not built yet are skipped).
pub fn built(plugin: &str) -> bool {
    bin_dir().join(plugin).is_file()
}

pub struct Net {
    pub name: String,
    pub host: Sandbox,
    netconf: TempDir,
    cache: TempDir,
    data: TempDir,
}

impl Net {
    /// Network `name` from conf/`file`, run in sandbox host `host`.
    pub fn new(file: &str, name: &str, host: Sandbox) -> Result<Net> {
        let label = host.name().rsplit('-').next().unwrap_or("net").to_string();
        let net = Net {
            name: name.to_string(),
            host,
            netconf: TempDir::new(&format!("{label}-conf")),
            cache: TempDir::new(&format!("{label}-cache")),
            data: TempDir::new(&format!("{label}-data")),
        };
        let path = conf_dir().join(file);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut v: Value =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        let data = Value::String(net.data.path().display().to_string());
        if let Some(plugins) = v.get_mut("plugins").and_then(Value::as_array_mut) {
            for p in plugins.iter_mut() {
                if let Some(ipam) = p.get_mut("ipam") {
                    ipam["dataDir"] = data.clone();
                }
            }
        }
        std::fs::write(net.netconf.path().join(file), serde_json::to_vec(&v)?)?;
        Ok(net)
    }

    fn cnitool(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Value> {
        let run = Cnitool::new(&self.host, self.netconf.path(), self.cache.path()).run(args, env);
        if !run.status.success() {
            bail!(
                "cnitool {}: {}{}",
                args.join(" "),
                run.stderr.trim(),
                run.stdout.trim()
            );
        }
        if run.stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&run.stdout).map_err(|e| anyhow!("cnitool output: {e}"))
    }

    /// ADD a container; returns its addresses.
    pub fn add(&self, ctr: &Sandbox, env: &[(&str, &str)]) -> Result<Vec<IpAddr>> {
        let r = self.cnitool(&["add", &self.name, path(ctr)?], env)?;
        Ok(r["ips"]
            .as_array()
            .map(|ips| {
                ips.iter()
                    .filter_map(|i| i["address"].as_str())
                    .filter_map(|a| a.split('/').next())
                    .filter_map(|a| a.parse().ok())
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn check(&self, ctr: &Sandbox) -> Result<()> {
        self.cnitool(&["check", &self.name, path(ctr)?], &[])
            .map(drop)
    }

    pub fn del(&self, ctr: &Sandbox) -> Result<()> {
        self.cnitool(&["del", &self.name, path(ctr)?], &[])
            .map(drop)
    }

    /// What the network still holds after every DEL: leases, cache entries, veths in the host.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = list(&self.data.path().join(&self.name))
            .into_iter()
            .filter(|n| n.parse::<IpAddr>().is_ok())
            .map(|n| format!("lease {n}"))
            .collect();
        left.extend(
            list(&self.cache.path().join("results"))
                .into_iter()
                .map(|n| format!("cache entry {n}")),
        );
        let veths = self.host.ip(&["-o", "link", "show", "type", "veth"]);
        left.extend(
            veths
                .lines()
                .filter_map(|l| l.split(':').nth(1))
                .map(|n| n.trim().split('@').next().unwrap_or_default().to_string())
                .filter(|n| n.starts_with("veth"))
                .map(|n| format!("host link {n}")),
        );
        left
    }
}

fn list(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn path(ctr: &Sandbox) -> Result<&str> {
    ctr.path()
        .to_str()
        .ok_or_else(|| anyhow!("netns path is not UTF-8"))
}
