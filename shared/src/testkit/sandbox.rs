//! Sandbox namespaces: `ip netns add` under a unique name, `lo` up, removed on drop together with
//! any process left inside.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

use crate::netns::NetNs;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();
const PREFIX: &str = "cnit-";

/// Fail the test clearly when not root: the integration tests need to create namespaces.
pub fn require_root() {
    if !nix::unistd::Uid::effective().is_root() {
        panic!(
            "integration tests create network namespaces and must run as root \
             (the README's test command does)"
        );
    }
}

/// A network namespace made for one test, deleted on drop.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    path: PathBuf,
}

impl Sandbox {
    /// A fresh namespace named `cnit-<pid>-<n>-<label>` with `lo` up.
    pub fn new(label: &str) -> Sandbox {
        require_root();
        SWEEP.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let sb = Sandbox {
            path: PathBuf::from("/run/netns").join(&name),
            name,
        };
        sb.ip(&["link", "set", "lo", "up"]);
        sb
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file (what runtimes pass as CNI_NETNS).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn netns(&self) -> NetNs {
        NetNs::open(&self.path).expect("open sandbox netns")
    }

    /// `ip -n <name> <args>`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ip -n <name> <args>` that may fail.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run ip")
    }

    /// A command run inside the namespace (`ip netns exec`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run a program inside the namespace; returns its output whatever the exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program)
            .args(args)
            .output()
            .expect("run in sandbox")
    }

    /// Connect this sandbox to `other` with a veth pair (`here` in self, `there` in other).
    pub fn link_to(&self, here: &str, other: &Sandbox, there: &str) {
        self.ip(&[
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ]);
        self.ip(&["link", "set", here, "up"]);
        other.ip(&["link", "set", there, "up"]);
    }

    /// Whether a link exists in this namespace.
    pub fn has_link(&self, name: &str) -> bool {
        self.try_ip(&["link", "show", "dev", name]).status.success()
    }

    /// The processes running in this namespace (e.g. an IPAM plugin whose parent was killed).
    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("run ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Delete the namespace now (e.g. to test DEL after the container is gone).
    pub fn delete(self) {
        drop(self)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        remove(&self.name);
    }
}

fn remove(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// Remove sandboxes left by test processes that died without cleaning up.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&name);
        }
    }
}

fn run_ok(c: &mut Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("running {c:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{c:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Write an executable file (a fake plugin, a wrapper script, a patched binary), mode 0755.
pub fn write_executable(path: &Path, contents: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("cnit-{}-{n}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
