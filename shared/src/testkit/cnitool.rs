//! Drive the built `cnitool` the way a runtime drives libcni: inside a sandbox host, with its
//! own configuration directory and result cache, every run bounded in time.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::runner::{bin_dir, plugin_path};
use super::sandbox::Sandbox;

/// How long one cnitool run may take before the test fails.
pub const CNITOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// cnitool bound to a sandbox host, a NETCONFPATH and a cache dir.
#[derive(Debug)]
pub struct Cnitool<'a> {
    host: &'a Sandbox,
    netconf: PathBuf,
    cache: PathBuf,
    cni_path: String,
}

/// What one cnitool run printed.
#[derive(Debug)]
pub struct CnitoolRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CnitoolRun {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    /// Panics unless the run succeeded.
    pub fn ok(self) -> CnitoolRun {
        assert!(self.status.success(), "cnitool failed: {self:?}");
        self
    }

    /// Panics unless the run failed with exit status 1; the error JSON from stdout.
    pub fn err(self) -> Value {
        assert_eq!(self.status.code(), Some(1), "cnitool should fail: {self:?}");
        self.json()
    }
}

impl<'a> Cnitool<'a> {
    /// cnitool in `host`, reading configurations from `netconf`, caching results under `cache`,
    /// finding plugins among the built binaries.
    pub fn new(host: &'a Sandbox, netconf: &Path, cache: &Path) -> Cnitool<'a> {
        Cnitool {
            host,
            netconf: netconf.to_path_buf(),
            cache: cache.to_path_buf(),
            cni_path: bin_dir().display().to_string(),
        }
    }

    /// Replace CNI_PATH (e.g. fake plugins first, then the built ones).
    pub fn cni_path(mut self, path: String) -> Cnitool<'a> {
        self.cni_path = path;
        self
    }

    /// `cnitool <args>` with the per-attachment variables cleared, then `env` set.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> CnitoolRun {
        let program = plugin_path("cnitool");
        let mut c = self.host.command(&program.display().to_string());
        c.args(args)
            .env("NETCONFPATH", &self.netconf)
            .env("CNI_PATH", &self.cni_path)
            .env("CNI_CACHE_DIR", &self.cache);
        for k in [
            "CNI_IFNAME",
            "CNI_ARGS",
            "CAP_ARGS",
            "CNI_CONTAINERID",
            "CNI_VALID_ATTACHMENTS",
        ] {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn cnitool");
        let mut out = child.stdout.take().expect("stdout");
        let mut err = child.stderr.take().expect("stderr");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait cnitool") {
                break s;
            }
            if start.elapsed() > CNITOOL_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cnitool {args:?} did not finish within {CNITOOL_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        CnitoolRun {
            status,
            stdout: reader.join().unwrap_or_default(),
            stderr: err_reader.join().unwrap_or_default(),
        }
    }
}
