//! Run one process the way a runtime does — inside a sandbox "host" namespace, with a clean
//! environment and a small stdin — and measure it: wall time from spawn to reaping, and the
//! peak resident set size the kernel reports for it (`wait4`'s `ru_maxrss`: the largest of the
//! process and the children it reaped).
//!
//! The harness adds as little as it can to what it measures: the process is spawned from a
//! thread that entered the namespace beforehand (so the standard library can use
//! `posix_spawn`, a vfork, instead of a fork of this process for a `setns` between fork and
//! exec), and stdin, stdout and stderr are memory files rather than pipes (no reader threads
//! competing for the two CPUs while the process runs).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cni_shared::testkit::Sandbox;

/// What one run did.
#[derive(Debug)]
pub struct Run {
    pub elapsed: Duration,
    /// Peak RSS in KiB (the process and the children it reaped).
    pub maxrss_kib: u64,
}

/// A program with its arguments, environment and stdin.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

impl<'a> Spec<'a> {
    pub fn new(program: &'a Path) -> Spec<'a> {
        Spec {
            program,
            args: Vec::new(),
            env: Vec::new(),
            stdin: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Self {
        self.env.push((k.to_string(), v.into()));
        self
    }

    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = data;
        self
    }

    /// Run inside `host`; unless it exits 0, an error that names the program and shows what it
    /// printed.
    pub fn run_in(&self, host: &Sandbox) -> Result<Run> {
        host.netns()
            .run(|| self.run_here())
            .map_err(|e| anyhow::anyhow!("entering {}: {e}", host.name()))?
    }

    /// Run in the calling thread's network namespace.
    fn run_here(&self) -> Result<Run> {
        let mut stdin = memfd("bench-stdin")?;
        stdin.write_all(&self.stdin)?;
        stdin.seek(SeekFrom::Start(0))?;
        let (mut out, mut err) = (memfd("bench-stdout")?, memfd("bench-stderr")?);
        let mut c = Command::new(self.program);
        c.args(&self.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(err.try_clone()?));
        let start = Instant::now();
        let child = c
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        let (status, maxrss_kib) = wait4(child.id() as libc::pid_t)?;
        let elapsed = start.elapsed();
        if status != 0 {
            let text = |f: &mut File| -> String {
                let mut v = Vec::new();
                let _ = f
                    .seek(SeekFrom::Start(0))
                    .and_then(|_| f.read_to_end(&mut v));
                String::from_utf8_lossy(&v).trim().to_string()
            };
            bail!(
                "{} {} exited with status {status}: {}{}",
                self.program.display(),
                self.args.join(" "),
                text(&mut out),
                text(&mut err)
            );
        }
        Ok(Run {
            elapsed,
            maxrss_kib,
        })
    }
}

/// An anonymous in-memory file.
fn memfd(name: &str) -> Result<File> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: a NUL-terminated name and valid flags; the returned descriptor is checked below.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("memfd_create");
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Reap `pid`: (exit status, or 128 + signal; peak RSS in KiB).
pub fn wait4(pid: libc::pid_t) -> Result<(i32, u64)> {
    let mut status = 0;
    // SAFETY: rusage is plain old data that the kernel fills in; zeroed is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own child, status and ru point to live stack variables.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    Ok((code, u64::try_from(ru.ru_maxrss).unwrap_or(0)))
}
