//! Peak RSS of every plugin process, host-local run by bridge included: a pass in which CNI_PATH
//! points at wrappers (symlinks to this binary) that run the real plugin, reap it with `wait4`
//! and log its `ru_maxrss`. The real plugin gets the real directory as its CNI_PATH, so what it
//! delegates runs as it would without the wrappers: our bridge, macvlan and vxlan run our
//! host-local in-process (see `cni_shared::builtin`), the reference's execute theirs. A
//! plugin's figure includes the children it reaped (the reference's host-local), so it is an
//! upper bound whenever a child is larger; host-local's own figure comes from the calls that
//! run it as the list's plugin.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use cni_shared::testkit::TempDir;

use crate::exec::wait4;
use crate::runtime::Side;

const REAL: &str = "CNI_BENCH_WRAP_REAL";
const LOG: &str = "CNI_BENCH_WRAP_LOG";

/// Wrapper mode: when this binary runs as `<plugin>` with the wrapper environment set, run the
/// real plugin and log its peak RSS; the exit code to return. `None`: not a wrapper call.
pub fn wrapper_main() -> Option<i32> {
    let real_dir = std::env::var_os(REAL)?;
    let log = std::env::var_os(LOG)?;
    let argv0 = std::env::args_os().next()?;
    let name = Path::new(&argv0)
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let program = Path::new(&real_dir).join(&name);
    let child = match Command::new(&program)
        .args(std::env::args_os().skip(1))
        .env("CNI_PATH", &real_dir)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cni-bench wrapper: running {}: {e}", program.display());
            return Some(127);
        }
    };
    let (code, kib) = wait4(child.id() as libc::pid_t).unwrap_or((125, 0));
    let cmd = std::env::var("CNI_COMMAND").unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&log)
    {
        let _ = writeln!(f, "{name} {cmd} {kib}");
    }
    Some(code)
}

/// A side whose CNI_PATH holds wrappers of its plugins; the log they write.
pub struct Wrapped {
    pub side: Side,
    _dir: TempDir,
    log: PathBuf,
}

pub fn wrap(side: &Side) -> Result<Wrapped> {
    let dir = TempDir::new("bench-wrap");
    let me = std::env::current_exe().context("finding cni-bench itself")?;
    for e in std::fs::read_dir(&side.dir)?.flatten() {
        if e.path().is_file() {
            std::os::unix::fs::symlink(&me, dir.path().join(e.file_name()))?;
        }
    }
    let log = dir.path().join("rss.log");
    let mut w = side.clone();
    w.dir = dir.path().to_path_buf();
    w.env.push((REAL.into(), side.dir.display().to_string()));
    w.env.push((LOG.into(), log.display().to_string()));
    Ok(Wrapped {
        side: w,
        _dir: dir,
        log,
    })
}

impl Wrapped {
    /// The largest peak RSS (KiB) logged per plugin.
    pub fn peaks(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        for line in text.lines() {
            let mut f = line.split_whitespace();
            if let (Some(name), Some(_cmd), Some(kib)) = (f.next(), f.next(), f.next()) {
                let kib: u64 = kib.parse().unwrap_or(0);
                let e = m.entry(name.to_string()).or_insert(0);
                *e = (*e).max(kib);
            }
        }
        m
    }
}
