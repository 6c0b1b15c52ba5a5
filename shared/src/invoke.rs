//! Find and run another CNI plugin (IPAM, or any plugin in a chain): the same configuration on
//! stdin, the CNI_* environment set explicitly, its result or its CNI error (code preserved) back.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::builtin::{self, Builtin};
use crate::error::{code, CniError, Result};
use crate::skel::{self, Command, Request};
use crate::spec::{CniResult, Version};

/// The CNI environment of one plugin execution.
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: String,
    pub cni_path: Vec<PathBuf>,
}

impl PluginEnv {
    /// The environment of the current request, for delegation.
    pub fn from_request(req: &Request) -> PluginEnv {
        PluginEnv {
            container_id: req.container_id.clone(),
            netns: req.netns.clone(),
            ifname: req.ifname.clone(),
            args: req.args.clone(),
            cni_path: req.cni_path.clone(),
        }
    }

    /// Set the CNI_* variables on a process (unset ones are removed, not inherited).
    pub fn apply(&self, command: Command, p: &mut Process) {
        p.env("CNI_COMMAND", command.as_str());
        let mut set = |k: &str, v: &str| {
            if v.is_empty() {
                p.env_remove(k);
            } else {
                p.env(k, v);
            }
        };
        set("CNI_CONTAINERID", &self.container_id);
        set("CNI_IFNAME", &self.ifname);
        set("CNI_ARGS", &self.args);
        let netns = self
            .netns
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        set("CNI_NETNS", &netns);
        let path = std::env::join_paths(&self.cni_path)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        set("CNI_PATH", &path);
    }
}

/// A plugin type names an executable in CNI_PATH: not empty, not a path (code 7).
fn check_plugin_name(plugin_type: &str) -> Result<()> {
    if plugin_type.is_empty() {
        return Err(CniError::invalid_config("type: missing plugin type"));
    }
    if plugin_type.contains('/') || plugin_type == "." || plugin_type == ".." {
        return Err(CniError::invalid_config(format!(
            "type: {plugin_type:?} must be a plugin name, not a path"
        )));
    }
    Ok(())
}

/// Find the executable for plugin `plugin_type` in the CNI_PATH directories.
pub fn find_plugin(plugin_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    check_plugin_name(plugin_type)?;
    for dir in cni_path {
        let candidate = dir.join(plugin_type);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(CniError::invalid_config(format!(
        "type: plugin {plugin_type:?} not found in CNI_PATH ({})",
        cni_path
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    )))
}

/// Run the plugin binary at `program` with `env` and `stdin`; its stdout on success, its CNI
/// error (code preserved) on failure. The child's stderr is passed on to ours.
pub fn exec(program: &Path, command: Command, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>> {
    let mut p = Process::new(program);
    env.apply(command, &mut p);
    communicate(p, stdin)
}

/// The largest stdin written without a helper thread: a pipe holds at least one page.
const DIRECT_STDIN_MAX: usize = 4096;

/// Spawn a prepared plugin process, feed it `stdin`, and interpret its exit.
pub fn communicate(mut p: Process, stdin: &[u8]) -> Result<Vec<u8>> {
    let name = p.get_program().to_string_lossy().into_owned();
    let mut child = p
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::io(format!("executing plugin {name}: {e}")))?;
    // A plugin may exit without reading stdin (e.g. an early error): EPIPE is ignored. A
    // configuration that fits a pipe's smallest buffer (one page) is written at once; a larger
    // one from a thread, so that a plugin that answers before it has read everything cannot
    // block us both.
    let feeder = child.stdin.take().and_then(|mut pipe| {
        if stdin.len() <= DIRECT_STDIN_MAX {
            let _ = pipe.write_all(stdin);
            return None;
        }
        let data = stdin.to_vec();
        Some(std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        }))
    });
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io(format!("waiting for plugin {name}: {e}")))?;
    if let Some(f) = feeder {
        let _ = f.join();
    }
    if !out.stderr.is_empty() {
        let _ = std::io::stderr().write_all(&out.stderr);
    }
    if out.status.success() {
        return Ok(out.stdout);
    }
    Err(error_from_output(
        &name,
        &out.stdout,
        &out.stderr,
        out.status,
    ))
}

/// The CNI error a plugin that exited unsuccessfully reported on stdout, or one made from its
/// exit status and the tail of its stderr.
pub(crate) fn error_from_output(
    name: &str,
    stdout: &[u8],
    stderr: &[u8],
    status: std::process::ExitStatus,
) -> CniError {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        if let Some(c) = v.get("code").and_then(Value::as_u64) {
            let msg = v.get("msg").and_then(Value::as_str).unwrap_or_default();
            let details = v.get("details").and_then(Value::as_str).unwrap_or_default();
            return CniError::new(u32::try_from(c).unwrap_or(code::INTERNAL), msg)
                .with_details(details);
        }
    }
    let tail = String::from_utf8_lossy(stderr);
    let tail = tail.trim();
    let tail: String = tail
        .char_indices()
        .rev()
        .take_while(|(i, _)| tail.len() - i <= 400)
        .map(|(_, c)| c)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    CniError::internal(format!(
        "plugin {name} failed ({status}) without a CNI error on stdout{}{tail}",
        if tail.is_empty() { "" } else { ": " }
    ))
}

/// The IPAM plugin compiled into this binary, if any (see [`crate::builtin`]).
static BUILTIN: OnceLock<&'static Builtin> = OnceLock::new();

/// Register the IPAM plugin compiled into this binary; called by a plugin's `main` before
/// `skel::run`. A second registration is ignored.
pub fn set_builtin(builtin: &'static Builtin) {
    let _ = BUILTIN.set(builtin);
}

/// Run the configured IPAM plugin's ADD with this request's environment and stdin. When it
/// fails (or its result cannot be read), its DEL runs before the error is returned, as the spec
/// asks of a plugin whose delegated ADD failed, so that nothing it may have reserved stays; the
/// DEL's own failure is only logged. Not for a plugin that could not be found (it ran no ADD),
/// nor for our host-local run in-process, whose failed ADD has released what it took (a DEL
/// would only queue again for the lock a timed-out ADD waited 60 s for).
pub fn delegate_add(ipam_type: &str, req: &Request) -> Result<CniResult> {
    let program = find_ipam(ipam_type, &req.cni_path)?;
    let added = run_ipam(ipam_type, &program, Command::Add, req).and_then(|d| {
        let parsed = match d {
            Delegated::Executed(out) => CniResult::from_slice(&out, req.version),
            Delegated::InProcess(v) => CniResult::from_value(&v, req.version),
        };
        parsed
            .map(|(_, result)| result)
            .map_err(|e| e.context(format!("result of IPAM plugin {ipam_type:?}")))
    });
    if let Err(e) = &added {
        if builtin_for(ipam_type, &program).is_none() {
            tracing::debug!(plugin = ipam_type, error = %e.msg, "IPAM ADD failed: running its DEL");
            if let Err(d) = run_ipam(ipam_type, &program, Command::Del, req) {
                tracing::warn!(plugin = ipam_type, error = %d.msg, "IPAM DEL after its failed ADD");
            }
        }
    }
    added
}

/// Run the IPAM plugin's DEL, CHECK, STATUS or GC with this request's environment and stdin.
pub fn delegate(ipam_type: &str, command: Command, req: &Request) -> Result<()> {
    let program = find_ipam(ipam_type, &req.cni_path)?;
    run_ipam(ipam_type, &program, command, req).map(drop)
}

/// What a delegated call gave: the executed plugin's stdout, or the built-in plugin's output —
/// an ADD result encoded in the configuration's version, as the executed one would have printed
/// it; null for the other verbs.
enum Delegated {
    Executed(Vec<u8>),
    InProcess(Value),
}

/// The built-in plugin when `program`, the `ipam_type` found in CNI_PATH, is our own build of it.
fn builtin_for(ipam_type: &str, program: &Path) -> Option<&'static Builtin> {
    BUILTIN
        .get()
        .copied()
        .filter(|b| b.name == ipam_type && builtin::carries(program, &b.build_id))
}

/// Run `program`, the IPAM plugin found in CNI_PATH: in-process when it is our own build of it.
fn run_ipam(ipam_type: &str, program: &Path, command: Command, req: &Request) -> Result<Delegated> {
    if let Some(b) = builtin_for(ipam_type, program) {
        tracing::debug!(
            plugin = ipam_type,
            cmd = command.as_str(),
            path = %program.display(),
            "running the IPAM plugin in-process (the same build)"
        );
        return in_process(b, command, req).map(Delegated::InProcess);
    }
    tracing::debug!(plugin = ipam_type, cmd = command.as_str(), "delegating");
    exec(program, command, &PluginEnv::from_request(req), &req.stdin).map(Delegated::Executed)
}

/// The IPAM plugin's executable in CNI_PATH. CNI_PATH is optional in the environment (SPEC.md),
/// but delegating needs it: without a directory (unset, empty, or only ':') this is code 4
/// naming CNI_PATH. The built-in copy does not stand in then: which `host-local` runs is the
/// runtime's choice, made through CNI_PATH, and the built-in one runs only when it is the one
/// found there (see [`crate::builtin`]).
fn find_ipam(ipam_type: &str, cni_path: &[PathBuf]) -> Result<PathBuf> {
    let at_ipam_type =
        |e: CniError| CniError::new(e.code, e.msg.replacen("type:", "ipam.type:", 1));
    check_plugin_name(ipam_type).map_err(at_ipam_type)?;
    if cni_path.is_empty() {
        return Err(CniError::invalid_env(format!(
            "CNI_PATH: unset or names no directory; it is required to find the IPAM plugin \
             {ipam_type:?} (ipam.type)"
        )));
    }
    find_plugin(ipam_type, cni_path).map_err(at_ipam_type)
}

/// The built-in plugin's verb on this request (with the delegated verb as its command).
fn in_process(b: &Builtin, command: Command, req: &Request) -> Result<Value> {
    let _span = tracing::info_span!("ipam", plugin = b.name, cmd = command.as_str()).entered();
    // The request as it is, not a copy with the verb changed: a GC's holds every valid
    // attachment of the node, twice (both spellings).
    Ok(skel::perform(b.plugin, command, req)?.unwrap_or(Value::Null))
}

/// The versions a plugin binary reports through VERSION.
pub fn plugin_versions(program: &Path) -> Result<Vec<Version>> {
    let stdin = format!(r#"{{"cniVersion":"{}"}}"#, Version::LATEST);
    let out = exec(
        program,
        Command::Version,
        &PluginEnv::default(),
        stdin.as_bytes(),
    )?;
    let v: Value = serde_json::from_slice(&out)
        .map_err(|e| CniError::decode(format!("VERSION output of {}: {e}", program.display())))?;
    Ok(v.get("supportedVersions")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cni-invoke-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn refuses_paths_as_types_and_reports_missing_plugins() {
        assert_eq!(find_plugin("../bin/sh", &[]).unwrap_err().code, 7);
        assert_eq!(find_plugin("/bin/sh", &[]).unwrap_err().code, 7);
        let e = find_plugin("nope", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert!(
            e.msg.contains("\"nope\"") && e.msg.contains("/nonexistent"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn delegating_without_cni_path_is_code_4_naming_it() {
        let e = find_ipam("host-local", &[]).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENVIRONMENT, "{}", e.msg);
        assert!(
            e.msg.starts_with("CNI_PATH:") && e.msg.contains("\"host-local\""),
            "{}",
            e.msg
        );
        // A bad ipam.type is a configuration error whatever the environment.
        let e = find_ipam("../sh", &[]).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.starts_with("ipam.type:"), "{}", e.msg);
        // With directories, a plugin that is not there stays code 7 naming ipam.type.
        let e = find_ipam("nope", &[PathBuf::from("/nonexistent")]).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg
                .starts_with("ipam.type: plugin \"nope\" not found in CNI_PATH (/nonexistent)"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn passes_env_and_stdin_and_keeps_error_codes() {
        let d = tempdir();
        script(
            &d,
            "echoer",
            r#"printf '{"cniVersion":"1.1.0","cmd":"%s","cid":"%s","stdin":' "$CNI_COMMAND" "$CNI_CONTAINERID"; cat; printf '}'"#,
        );
        script(
            &d,
            "failer",
            r#"echo '{"cniVersion":"1.1.0","code":11,"msg":"busy","details":"d"}'; exit 1"#,
        );
        script(&d, "crasher", "echo oops >&2; exit 3");
        let env = PluginEnv {
            container_id: "c1".into(),
            cni_path: vec![d.clone()],
            ..PluginEnv::default()
        };
        let prog = find_plugin("echoer", &env.cni_path).unwrap();
        let out = exec(&prog, Command::Del, &env, br#"{"x":1}"#).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["cmd"], "DEL");
        assert_eq!(v["cid"], "c1");
        assert_eq!(v["stdin"]["x"], 1);

        let e = exec(&d.join("failer"), Command::Add, &env, b"{}").unwrap_err();
        assert_eq!(
            (e.code, e.msg.as_str(), e.details.as_str()),
            (11, "busy", "d")
        );
        let e = exec(&d.join("crasher"), Command::Add, &env, b"{}").unwrap_err();
        assert_eq!(e.code, code::INTERNAL);
        assert!(e.msg.contains("oops"), "{}", e.msg);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
