//! `cnitool`: run a CNI network configuration list against a network namespace, the way a
//! libcni-based runtime does (and the reference `cnitool` CLI does). A thin layer over
//! `cni_shared::libcni`.
//!
//! Exit status: 0 on success; 1 on a CNI error (printed on stderr, and as the spec's error JSON
//! `{"cniVersion","code","msg","details"}` on stdout); 2 on a malformed command line.

mod cli;
mod netns_id;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use cni_shared::libcni::{self, load_network_conf, CniConfig, RuntimeConf, DEFAULT_CACHE_DIR};
use cni_shared::spec::{NetConf, Version};
use cni_shared::{CniError, Result};
use serde::Serialize;
use serde_json::Value;

use cli::{Invocation, Parsed, Verb};

const DEFAULT_NET_DIR: &str = "/etc/cni/net.d";
const DEFAULT_IFNAME: &str = "eth0";

fn main() -> ExitCode {
    cni_shared::logging::init("cnitool", &NetConf::default());
    let inv = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(inv)) => inv,
        Ok(Parsed::Help) => {
            let _ = writeln!(std::io::stdout(), "{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cnitool: {e:#}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let mut version = Version::LATEST;
    let outcome = run(&inv, &mut version).and_then(|out| match out {
        Some(v) => print_json(&v),
        None => Ok(()),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnitool {} {}: {e}", inv.verb.as_str(), inv.network);
            let _ = print_json(&e.to_json(version.as_str()));
            ExitCode::from(1)
        }
    }
}

/// Load the network and run the verb; `version` is set to the network's once it is known (for
/// the error JSON).
fn run(inv: &Invocation, version: &mut Version) -> Result<Option<Value>> {
    let net_dir = env_nonempty("NETCONFPATH").unwrap_or_else(|| DEFAULT_NET_DIR.into());
    let list = load_network_conf(Path::new(&net_dir), &inv.network)?;
    *version = list.cni_version;
    let cache_dir = inv
        .cache_dir
        .clone()
        .or_else(|| env_nonempty("CNI_CACHE_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
    let cni = CniConfig::new(cni_path(), cache_dir);
    match inv.verb {
        Verb::Add => cni.add_network_list(&list, &runtime_conf(inv)?).map(Some),
        Verb::Check => cni
            .check_network_list(&list, &runtime_conf(inv)?)
            .map(|()| None),
        Verb::Del => cni
            .del_network_list(&list, &runtime_conf(inv)?)
            .map(|()| None),
        Verb::Status => cni.status_network_list(&list).map(|()| None),
        Verb::Gc => {
            let mut valid = inv.valid.clone();
            if let Some(s) = env_nonempty("CNI_VALID_ATTACHMENTS") {
                valid.extend(
                    cli::parse_attachment_list(&s)
                        .map_err(|e| CniError::invalid_env(format!("{e:#}")))?,
                );
            }
            cni.gc_network_list(&list, &valid).map(|()| None)
        }
    }
}

/// The attachment: netns made absolute, container ID from the flag, CNI_CONTAINERID or the
/// netns path, ifname from the flag, CNI_IFNAME or `eth0`, CNI_ARGS and CAP_ARGS parsed.
fn runtime_conf(inv: &Invocation) -> Result<RuntimeConf> {
    let netns = inv
        .netns
        .as_deref()
        .ok_or_else(|| CniError::invalid_env("missing netns path"))?;
    let cwd = std::env::current_dir()
        .map_err(|e| CniError::io(format!("reading the working directory: {e}")))?;
    let netns = netns_id::absolute(netns, &cwd);
    let container_id = inv
        .container_id
        .clone()
        .or_else(|| env_nonempty("CNI_CONTAINERID"))
        .unwrap_or_else(|| netns_id::container_id(&netns));
    let ifname = inv
        .ifname
        .clone()
        .or_else(|| env_nonempty("CNI_IFNAME"))
        .unwrap_or_else(|| DEFAULT_IFNAME.into());
    Ok(RuntimeConf {
        container_id,
        netns: netns.to_string_lossy().into_owned(),
        ifname,
        args: libcni::parse_cni_args(&env_nonempty("CNI_ARGS").unwrap_or_default())?,
        capability_args: libcni::parse_capability_args(
            &env_nonempty("CAP_ARGS").unwrap_or_default(),
        )?,
    })
}

fn cni_path() -> Vec<PathBuf> {
    std::env::var_os("CNI_PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| !d.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn env_nonempty(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

/// Indented JSON and a newline on stdout (4 spaces, like the reference's `result.Print`).
fn print_json(v: &Value) -> Result<()> {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(
        &mut buf,
        serde_json::ser::PrettyFormatter::with_indent(b"    "),
    );
    v.serialize(&mut ser)
        .map_err(|e| CniError::internal(format!("encoding output: {e}")))?;
    buf.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&buf)
        .and_then(|()| out.flush())
        .map_err(|e| CniError::io(format!("writing to stdout: {e}")))
}
