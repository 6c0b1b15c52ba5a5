//! Run one process the way a runtime does — inside a sandbox "host" namespace, with a clean
//! environment and a small stdin — and measure it: wall time from spawn to reaping, and the
//! peak resident set size the kernel reports for it (`wait4`'s `ru_maxrss`: the largest of the
//! process and the children it reaped).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
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
        let ns = host.netns();
        let fd = ns.as_fd().as_raw_fd();
        let mut c = Command::new(self.program);
        c.args(&self.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only the async-signal-safe setns syscall runs, on an fd
        // that stays open in the parent until the child has been spawned.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let start = Instant::now();
        let mut child = c
            .spawn()
            .with_context(|| format!("spawning {}", self.program.display()))?;
        drop(ns);
        let pid = child.id() as libc::pid_t;
        if let Some(mut w) = child.stdin.take() {
            // Configurations are far smaller than a pipe's buffer; a plugin that exits without
            // reading is not an error here.
            let _ = w.write_all(&self.stdin);
        }
        let readers = [
            child.stdout.take().map(reader),
            child.stderr.take().map(reader),
        ];
        let (status, maxrss_kib) = wait4(pid)?;
        let elapsed = start.elapsed();
        let [out, err] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
        if status != 0 {
            bail!(
                "{} {} exited with status {status}: {}{}",
                self.program.display(),
                self.args.join(" "),
                String::from_utf8_lossy(&out).trim(),
                String::from_utf8_lossy(&err).trim()
            );
        }
        Ok(Run {
            elapsed,
            maxrss_kib,
        })
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
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
