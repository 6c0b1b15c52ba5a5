//! The runtime side, identical for every implementation under test: the built `cnitool`,
//! executed once per operation inside a sandbox host, with its own configuration directory and
//! result cache; only CNI_PATH differs between our plugins and the reference's.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cni_shared::testkit::{bin_dir, plugin_path, Sandbox, TempDir};
use serde_json::Value;

use crate::exec::{Run, Spec};

/// Where Debian's containernetworking-plugins puts the reference binaries.
pub const REFERENCE_DIR: &str = "/usr/lib/cni";

/// The label of [`Side::ours_no_link_local`].
pub const NO_LINK_LOCAL: &str = "ours (disableIPv6LinkLocal, alone)";

/// One implementation under test.
#[derive(Debug, Clone)]
pub struct Side {
    pub label: String,
    /// CNI_PATH: where its plugins are.
    pub dir: PathBuf,
    /// The reference: no `vxlan`, and its firewall is iptables only.
    pub reference: bool,
    /// Ours with the iptables backends instead of the nftables default.
    pub iptables: bool,
    /// Ours with `disableIPv6LinkLocal` in the chain's bridge (`--disable-ipv6-link-local`).
    pub no_link_local: bool,
    /// Extra environment for cnitool and the plugins (the RSS pass's wrappers).
    pub env: Vec<(String, String)>,
}

impl Side {
    pub fn ours() -> Side {
        Side {
            label: "ours".into(),
            dir: bin_dir(),
            reference: false,
            iptables: false,
            no_link_local: false,
            env: Vec::new(),
        }
    }

    pub fn ours_iptables() -> Side {
        Side {
            label: "ours (iptables)".into(),
            iptables: true,
            ..Side::ours()
        }
    }

    /// Ours with the opt-in `disableIPv6LinkLocal` (the chain part only, run alone after the
    /// other sides): the containers get no IPv6 link-local address, so none of the multicast
    /// their kernels send for one.
    pub fn ours_no_link_local() -> Side {
        Side {
            label: NO_LINK_LOCAL.into(),
            no_link_local: true,
            ..Side::ours()
        }
    }

    /// Our plugins built for glibc (`cargo build --release`), next to the shipped static musl
    /// build: the directory `scripts/bench.sh --glibc` puts in `CNI_BENCH_GLIBC_DIR`.
    pub fn ours_glibc() -> Option<Side> {
        let dir = PathBuf::from(std::env::var_os("CNI_BENCH_GLIBC_DIR")?);
        dir.join("bridge").is_file().then(|| Side {
            label: "ours (glibc)".into(),
            dir,
            ..Side::ours()
        })
    }

    /// Another build of our plugins (e.g. an older commit's, for a before/after comparison),
    /// labelled with its directory's name.
    pub fn other(dir: PathBuf) -> Side {
        let name = dir
            .file_name()
            .map_or("other".into(), |n| n.to_string_lossy().into_owned());
        Side {
            label: name,
            dir,
            ..Side::ours()
        }
    }

    /// The reference plugins, when installed.
    pub fn reference() -> Option<Side> {
        Path::new(REFERENCE_DIR)
            .join("bridge")
            .is_file()
            .then(|| Side {
                label: "reference".into(),
                dir: PathBuf::from(REFERENCE_DIR),
                reference: true,
                iptables: false,
                no_link_local: false,
                env: Vec::new(),
            })
    }

    pub fn has(&self, plugin: &str) -> bool {
        self.dir.join(plugin).is_file()
    }
}

/// cnitool bound to a sandbox host, a side and a configuration directory.
#[derive(Debug)]
pub struct Runtime<'a> {
    pub host: &'a Sandbox,
    pub side: Side,
    netconf: TempDir,
    /// The same lists in CNI 1.1.0, for GC and STATUS (libcni sends neither to older lists).
    netconf_v11: TempDir,
    cache: TempDir,
    cnitool: PathBuf,
}

impl<'a> Runtime<'a> {
    pub fn new(host: &'a Sandbox, side: &Side) -> Runtime<'a> {
        Runtime {
            host,
            side: side.clone(),
            netconf: TempDir::new("bench-netconf"),
            netconf_v11: TempDir::new("bench-netconf-v11"),
            cache: TempDir::new("bench-cache"),
            cnitool: plugin_path("cnitool"),
        }
    }

    /// Write a configuration list (`name` is the network name and the file name), and its
    /// CNI 1.1.0 copy for [`Runtime::op_v11`].
    pub fn install(&self, name: &str, list: &Value) -> Result<()> {
        let mut v11 = list.clone();
        v11["cniVersion"] = Value::from("1.1.0");
        for (dir, l) in [(&self.netconf, list), (&self.netconf_v11, &v11)] {
            let p = dir.path().join(format!("{name}.conflist"));
            std::fs::write(&p, serde_json::to_vec_pretty(l)?)
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }

    /// `cnitool <verb> <network>` with this side's plugins, configuration directory `netconf`
    /// and result cache, and the side's extra environment.
    fn cnitool(&self, verb: &str, network: &str, netconf: &TempDir) -> Spec<'_> {
        let mut s = Spec::new(&self.cnitool)
            .arg(verb)
            .arg(network)
            .env("NETCONFPATH", netconf.path().display().to_string())
            .env("CNI_PATH", self.side.dir.display().to_string())
            .env("CNI_CACHE_DIR", self.cache.path().display().to_string());
        for (k, v) in &self.side.env {
            s = s.env(k, v.clone());
        }
        s
    }

    /// `cnitool <verb> <network>` of the CNI 1.1.0 list (GC, STATUS), with the same result
    /// cache as [`Runtime::op`]; `valid` is GC's `CNI_VALID_ATTACHMENTS`.
    pub fn op_v11(&self, verb: &str, network: &str, valid: &str) -> Result<Run> {
        self.cnitool(verb, network, &self.netconf_v11)
            .env("CNI_VALID_ATTACHMENTS", valid)
            .run_in(self.host)
            .with_context(|| format!("{}: cnitool {verb} {network} (CNI 1.1.0)", self.side.label))
    }

    /// `cnitool <verb> <network> <netns>` for container `id` (interface `ifname`), with
    /// CAP_ARGS when given.
    pub fn op(
        &self,
        verb: &str,
        network: &str,
        ctr: &Sandbox,
        id: &str,
        ifname: &str,
        cap_args: Option<&Value>,
    ) -> Result<Run> {
        let mut s = self
            .cnitool(verb, network, &self.netconf)
            .arg(ctr.path().display().to_string())
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname);
        if let Some(c) = cap_args {
            s = s.env("CAP_ARGS", c.to_string());
        }
        s.run_in(self.host)
            .with_context(|| format!("{}: cnitool {verb} {network} ({id})", self.side.label))
    }
}
