//! A plugin process that can be killed while it runs: what a runtime's timeout does to the
//! plugin it executed. Only the plugin itself is killed; a child it started (the IPAM plugin)
//! runs on, reparented, as it would under a real runtime.

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::runner::{Call, CallOutput};
use super::sandbox::Sandbox;
use crate::error::CniError;
use crate::invoke::error_from_output;

/// How long a spawned plugin may run before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A running plugin process.
#[derive(Debug)]
pub struct Running {
    child: Child,
    name: String,
    started: Instant,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

/// How a spawned plugin ended.
#[derive(Debug)]
pub enum Outcome {
    /// It exited by itself: its output, or the CNI error it reported.
    Done(Result<CallOutput, CniError>),
    /// It was SIGKILLed this long after it was started.
    Killed(Duration),
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

impl Call {
    /// Start the plugin inside `host` with its config on stdin, without waiting for it.
    pub fn spawn_in(&self, host: &Sandbox) -> Running {
        let stdin = serde_json::to_vec(&self.config).expect("encode config");
        let (mut p, ns) = self.process_in(host);
        p.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = p
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.plugin));
        drop(ns);
        if let Some(mut pipe) = child.stdin.take() {
            // Small configs fit the pipe; a thread keeps a large one from blocking us.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&stdin);
            });
        }
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Running {
            child,
            name: self.plugin.clone(),
            started,
            stdout,
            stderr,
        }
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since the process was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Wait for the process; SIGKILL it once `kill_at` has passed since its start, unless it
    /// exited before. Panics when it runs longer than [`RUN_TIMEOUT`] without being killed.
    pub fn finish(mut self, kill_at: Option<Duration>) -> Outcome {
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for plugin") {
                return Outcome::Done(self.collect(status));
            }
            let now = self.started.elapsed();
            if kill_at.is_some_and(|at| now >= at) {
                let _ = self.child.kill();
                match self.child.wait().expect("wait for killed plugin") {
                    // It may have exited on its own in the meantime.
                    s if s.code().is_some() => return Outcome::Done(self.collect(s)),
                    _ => {
                        self.join_output();
                        return Outcome::Killed(now);
                    }
                }
            }
            if now > RUN_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{} did not finish within {RUN_TIMEOUT:?}", self.name);
            }
            let pause = kill_at
                .map(|at| at.saturating_sub(now))
                .unwrap_or(Duration::from_millis(2))
                .clamp(Duration::from_micros(200), Duration::from_millis(2));
            std::thread::sleep(pause);
        }
    }

    /// Wait for the process (bounded by [`RUN_TIMEOUT`]): its output or its CNI error.
    pub fn wait(self) -> Result<CallOutput, CniError> {
        match self.finish(None) {
            Outcome::Done(r) => r,
            Outcome::Killed(_) => unreachable!("not killed without a deadline"),
        }
    }

    fn join_output(&mut self) -> (Vec<u8>, Vec<u8>) {
        let join =
            |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        (join(self.stdout.take()), join(self.stderr.take()))
    }

    fn collect(&mut self, status: std::process::ExitStatus) -> Result<CallOutput, CniError> {
        let (stdout, stderr) = self.join_output();
        if !stderr.is_empty() {
            let _ = std::io::stderr().write_all(&stderr);
        }
        if status.success() {
            Ok(CallOutput { stdout })
        } else {
            Err(error_from_output(&self.name, &stdout, &stderr, status))
        }
    }
}
