//! Execute a built plugin binary the way a runtime does: CNI_* environment, config on stdin,
//! inside a sandbox "host" namespace.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command as Process;

use serde_json::Value;

use super::sandbox::Sandbox;
use crate::error::CniError;
use crate::invoke::{communicate, PluginEnv};
use crate::netns::NetNs;
use crate::skel::Command;
use crate::spec::{CniResult, Version};

/// The directory holding the workspace's built binaries: `CNI_TEST_BIN_DIR`, else the target
/// directory the running test or bench executable itself was built into.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CNI_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // Test executables live in target/<profile>/deps, binaries in target/<profile>.
    let dir = exe.parent().expect("executable has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of a built plugin binary; panics with the fix when it has not been built.
pub fn plugin_path(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    if !p.is_file() {
        panic!(
            "plugin binary {} is not built: run `cargo build --workspace --bins` first \
             (the README's test command does)",
            p.display()
        );
    }
    p
}

/// One plugin call: verb, environment, config.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: Command,
    pub env: PluginEnv,
    pub config: Value,
    /// Extra environment (e.g. CNI_LOG_LEVEL).
    pub extra_env: Vec<(String, String)>,
}

/// What a call printed.
#[derive(Debug, Clone)]
pub struct CallOutput {
    pub stdout: Vec<u8>,
}

impl CallOutput {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "plugin stdout is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.stdout)
            )
        })
    }

    /// Decode the stdout as a result of the given version.
    pub fn result(&self, version: Version) -> CniResult {
        CniResult::from_slice(&self.stdout, version)
            .unwrap_or_else(|e| panic!("bad result: {e}"))
            .1
    }
}

impl Call {
    /// A call of `plugin` with CNI_PATH set to the built binaries.
    pub fn new(plugin: &str, command: Command, config: Value) -> Call {
        Call {
            plugin: plugin.to_string(),
            command,
            env: PluginEnv {
                cni_path: vec![bin_dir()],
                ..PluginEnv::default()
            },
            config,
            extra_env: Vec::new(),
        }
    }

    pub fn container(mut self, id: &str, ifname: &str, netns: Option<&Path>) -> Call {
        self.env.container_id = id.to_string();
        self.env.ifname = ifname.to_string();
        self.env.netns = netns.map(Path::to_path_buf);
        self
    }

    pub fn args(mut self, args: &str) -> Call {
        self.env.args = args.to_string();
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Call {
        self.extra_env.push((k.into(), v.into()));
        self
    }

    /// Run the plugin with its process inside `host`. Ok(stdout) on exit 0, the CNI error else.
    pub fn run_in(&self, host: &Sandbox) -> Result<CallOutput, CniError> {
        let stdin = serde_json::to_vec(&self.config).expect("encode config");
        self.run_raw_in(host, &stdin)
    }

    /// Like [`Call::run_in`] with raw stdin bytes (for malformed-input tests).
    pub fn run_raw_in(&self, host: &Sandbox, stdin: &[u8]) -> Result<CallOutput, CniError> {
        let (p, ns) = self.process_in(host);
        let out = communicate(p, stdin);
        drop(ns);
        out.map(|stdout| CallOutput { stdout })
    }

    /// The plugin's process, set up to enter `host` before exec; the namespace handle must stay
    /// open until the process has been spawned.
    pub(super) fn process_in(&self, host: &Sandbox) -> (Process, NetNs) {
        let mut p = Process::new(plugin_path(&self.plugin));
        self.env.apply(self.command, &mut p);
        for (k, v) in &self.extra_env {
            p.env(k, v);
        }
        let ns = host.netns();
        let fd = ns.as_fd().as_raw_fd();
        // SAFETY: between fork and exec only the async-signal-safe setns syscall runs, on an fd
        // that stays open in the parent until the child has been spawned.
        unsafe {
            p.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        (p, ns)
    }
}
