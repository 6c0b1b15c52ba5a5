//! The plugin skeleton: environment → verb, stdin → configuration, dispatch to the plugin, and the
//! result or error → stdout with the exit code. Every plugin's `main` is `skel::run(&Plugin, ABOUT)`.
//! An ADD whose result cannot be written (its caller was killed) is undone by the plugin's DEL.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::OnceLock;

use serde_json::Value;

use crate::args::CniArgs;
use crate::error::{CniError, Result};
use crate::logging;
use crate::spec::{decode_config, CniResult, GcAttachment, NetConf, Version};
use crate::validate;

/// Largest configuration accepted on stdin.
pub const MAX_STDIN: u64 = 16 << 20;

/// The CNI verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// Whether the verb concerns one attachment (and so needs CNI_CONTAINERID and CNI_IFNAME).
    pub fn is_per_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl FromStr for Command {
    type Err = CniError;
    fn from_str(s: &str) -> Result<Command> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            other => {
                return Err(CniError::invalid_env(format!(
                    "CNI_COMMAND: unknown command {other:?} (expected ADD, DEL, CHECK, VERSION, \
                     STATUS or GC)"
                )))
            }
        })
    }
}

/// One validated invocation: the environment, the raw stdin and its decoded common keys.
#[derive(Debug, Clone)]
pub struct Request {
    pub command: Command,
    /// CNI_CONTAINERID; empty for GC and STATUS.
    pub container_id: String,
    /// CNI_NETNS; always set for ADD and CHECK, optional for DEL, absent otherwise.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME; empty for GC and STATUS.
    pub ifname: String,
    /// CNI_ARGS as given.
    pub args: String,
    /// CNI_PATH split on ':'; empty when unset. It is optional for every verb (SPEC.md): only a
    /// plugin that executes another one needs it, and says so then (see
    /// [`crate::invoke::delegate`]).
    pub cni_path: Vec<PathBuf>,
    /// The configuration bytes exactly as received (passed on unchanged to delegated plugins).
    pub stdin: Vec<u8>,
    /// The configuration's `cniVersion`: the version of every output.
    pub version: Version,
    pub conf: NetConf,
    /// The whole configuration, for the plugin's own keys — except GC's lists of valid
    /// attachments (`cni.dev/valid-attachments`, `cni.dev/attachments`), which are decoded
    /// straight into `conf` (see [`NetConf::parse`]; [`Request::gc_valid_attachments`]).
    pub raw: Value,
}

impl Request {
    /// Decode the plugin's own configuration struct (code 7 naming the key on a type error).
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        decode_config(&self.raw)
    }

    /// CNI_ARGS, parsed.
    pub fn cni_args(&self) -> Result<CniArgs> {
        CniArgs::parse(&self.args)
    }

    /// The prevResult, decoded; a prevResult without `cniVersion` takes the config's.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        match &self.conf.prev_result {
            None | Some(Value::Null) => Ok(None),
            Some(v) => CniResult::from_value(v, self.version)
                .map(|(_, r)| Some(r))
                .map_err(|e| e.context("prevResult")),
        }
    }

    /// The prevResult, which this verb cannot do without (code 7 when absent).
    pub fn require_prev_result(&self) -> Result<CniResult> {
        self.prev_result()?.ok_or_else(|| {
            CniError::invalid_config(format!(
                "prevResult: required for {} by the {} plugin",
                self.command.as_str(),
                self.conf.plugin_type
            ))
        })
    }

    /// CNI_NETNS, which this verb cannot do without (code 4 when absent).
    pub fn require_netns(&self) -> Result<&std::path::Path> {
        self.netns
            .as_deref()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS: required"))
    }

    /// GC's valid attachments (both spellings).
    pub fn gc_valid_attachments(&self) -> Result<Vec<GcAttachment>> {
        self.conf.gc_valid_attachments()
    }
}

/// What a plugin implements: one method per verb. VERSION is answered by the skel.
pub trait Plugin {
    fn add(&self, req: &Request) -> Result<CniResult>;
    fn del(&self, req: &Request) -> Result<()>;
    fn check(&self, req: &Request) -> Result<()>;
    fn status(&self, req: &Request) -> Result<()>;
    fn gc(&self, req: &Request) -> Result<()>;
}

/// The plugin's name and version, for the about line and the logs.
#[derive(Debug, Clone, Copy)]
pub struct About {
    pub name: &'static str,
    pub version: &'static str,
}

/// The version errors are printed in: the config's once known, else the latest.
static ERROR_VERSION: OnceLock<Version> = OnceLock::new();

/// Run the plugin as a CNI executable and exit. A panic anywhere still ends as a CNI error on
/// stdout (code 999) with exit status 1.
pub fn run<P: Plugin>(plugin: &P, about: About) -> ! {
    install_panic_hook();
    let env = |k: &str| std::env::var(k).ok();
    let stdin = std::io::stdin();
    let tty = stdin.is_terminal();
    let code = run_with(
        plugin,
        about,
        &env,
        &mut stdin.lock(),
        tty,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    );
    crate::detach::exit(code)
}

fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let err = CniError::internal(format!("internal error: {what}{at}"));
        let version = ERROR_VERSION.get().copied().unwrap_or(Version::LATEST);
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", err.to_json(version.as_str()));
        let _ = out.flush();
        let _ = writeln!(std::io::stderr(), "{err}");
        std::process::exit(1);
    }));
}

/// The skel with its inputs and outputs passed in (tests drive this directly). Returns the exit
/// status.
pub fn run_with<P: Plugin>(
    plugin: &P,
    about: About,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdin_is_tty: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let command = match env("CNI_COMMAND").filter(|c| !c.is_empty()) {
        None => {
            let _ = writeln!(stderr, "CNI {} plugin v{}", about.name, about.version);
            let versions: Vec<&str> = Version::ALL.iter().map(|v| v.as_str()).collect();
            let _ = writeln!(
                stderr,
                "CNI protocol versions supported: {}",
                versions.join(", ")
            );
            return 0;
        }
        Some(c) => c,
    };
    let mut added = None;
    let outcome = dispatch(
        plugin,
        about,
        env,
        &command,
        stdin,
        stdin_is_tty,
        &mut added,
    );
    let printed = match &outcome {
        Ok(Some(v)) => writeln!(stdout, "{v}").and_then(|()| stdout.flush()),
        Ok(None) => Ok(()),
        Err((version, e)) => {
            tracing::warn!(code = e.code, "{}", e.msg);
            writeln!(stdout, "{}", e.to_json(version.as_str()))
        }
    };
    let _ = stdout.flush();
    if let (Err(e), Some(req)) = (&printed, added) {
        undo_undelivered_add(plugin, req, e);
    }
    match (outcome, printed) {
        (Ok(_), Ok(())) => 0,
        _ => 1,
    }
}

/// An ADD whose result cannot be delivered (EPIPE: the caller is gone — a runtime's timeout
/// killed it, or it is the parent plugin of an IPAM call) failed as far as anyone can know:
/// nobody will use what it made, and a DEL the caller's caller sends may already have come
/// and gone (a killed bridge's host-local reserving after the runtime's DEL). So it is undone
/// here by the plugin's own DEL instead of leaking until a GC.
fn undo_undelivered_add<P: Plugin>(plugin: &P, mut req: Request, e: &std::io::Error) {
    if e.kind() != std::io::ErrorKind::BrokenPipe {
        return;
    }
    tracing::warn!("the ADD result cannot be delivered (the caller is gone): undoing the ADD");
    req.command = Command::Del;
    if let Err(e) = plugin.del(&req) {
        tracing::warn!("undoing the undelivered ADD: {e}");
    }
}

type Outcome = std::result::Result<Option<Value>, (Version, CniError)>;

/// Run the verb; a successful ADD leaves its request in `added` (to undo it when its result
/// cannot be delivered).
fn dispatch<P: Plugin>(
    plugin: &P,
    about: About,
    env: &dyn Fn(&str) -> Option<String>,
    command: &str,
    stdin: &mut dyn Read,
    stdin_is_tty: bool,
    added: &mut Option<Request>,
) -> Outcome {
    let command: Command = command.parse().map_err(|e| (Version::LATEST, e))?;
    if command == Command::Version {
        return Ok(Some(version_output(stdin, stdin_is_tty)));
    }
    let req = read_request(command, env, stdin, stdin_is_tty)?;
    let version = req.version;
    let _ = ERROR_VERSION.set(version);
    logging::init(about.name, &req.conf);
    // Fault injection for the tests of the panic path; absent from release builds.
    #[cfg(debug_assertions)]
    #[allow(clippy::panic)]
    if env("CNI_TEST_PANIC").is_some() {
        panic!("injected by CNI_TEST_PANIC");
    }
    let span = tracing::info_span!(
        "cni",
        plugin = about.name,
        cmd = command.as_str(),
        net = %req.conf.name,
        cid = %req.container_id,
        ifname = %req.ifname
    );
    let _enter = span.enter();
    tracing::debug!("start");
    let out = perform(plugin, command, &req).map_err(|e| (version, e))?;
    tracing::debug!("done");
    if command == Command::Add {
        *added = Some(req);
    }
    Ok(out)
}

/// `command` on the plugin with this request (the request's own verb, or the one a delegating
/// plugin asks its built-in IPAM for): an ADD's result encoded in the request's version;
/// nothing for the other verbs (VERSION is answered before a request exists).
pub(crate) fn perform(
    plugin: &dyn Plugin,
    command: Command,
    req: &Request,
) -> Result<Option<Value>> {
    Ok(match command {
        Command::Add => Some(plugin.add(req)?.to_value(req.version)?),
        Command::Del => plugin.del(req).map(|()| None)?,
        Command::Check => plugin.check(req).map(|()| None)?,
        Command::Status => plugin.status(req).map(|()| None)?,
        Command::Gc => plugin.gc(req).map(|()| None)?,
        Command::Version => None,
    })
}

/// VERSION's answer. Its `cniVersion` is "the value of cniVersion specified on input" (SPEC.md),
/// whether or not we speak it (libcni sends the newest version it knows, and only looks at
/// `supportedVersions`); the latest when stdin has no non-empty `cniVersion` string (a terminal,
/// nothing, not JSON).
fn version_output(stdin: &mut dyn Read, stdin_is_tty: bool) -> Value {
    let mut buf = Vec::new();
    if !stdin_is_tty {
        let _ = stdin.take(MAX_STDIN).read_to_end(&mut buf);
    }
    let asked = serde_json::from_slice::<Value>(&buf)
        .ok()
        .and_then(|mut v| match v.get_mut("cniVersion").map(Value::take) {
            Some(Value::String(s)) if !s.is_empty() => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| Version::LATEST.as_str().to_owned());
    serde_json::json!({
        "cniVersion": asked,
        "supportedVersions": Version::ALL.map(Version::as_str),
    })
}

/// Validate the environment and decode stdin for a verb other than VERSION.
pub fn parse_request(
    command: Command,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<Request> {
    read_request(command, env, stdin, false).map_err(|(_, e)| e)
}

/// [`parse_request`], each error with the version it is printed in: "the same value as provided
/// by the configuration" (SPEC.md, Error) whenever stdin has a `cniVersion` we know, the latest
/// only when it has none we can read. An environment error still comes before any configuration
/// error; stdin is read for its version then, except from a terminal (someone trying the binary
/// by hand gets the error at once).
fn read_request(
    command: Command,
    env: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
    stdin_is_tty: bool,
) -> std::result::Result<Request, (Version, CniError)> {
    let latest = |e: CniError| (Version::LATEST, e);
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    let attachment = match attachment_env(command, &get) {
        Err(e) if stdin_is_tty => return Err(latest(e)),
        a => a,
    };
    let bytes = read_stdin(stdin);
    let (container_id, ifname, netns) = attachment.map_err(|e| {
        let version = bytes.as_deref().map_or(Version::LATEST, version_hint);
        (version, e)
    })?;
    let bytes = bytes.map_err(latest)?;
    let (conf, raw) = NetConf::parse(&bytes).map_err(|e| (version_hint(&bytes), e))?;
    let version = Version::parse_config_version(Some(&conf.cni_version)).map_err(latest)?;
    let in_version = |e: CniError| (version, e);
    if conf.plugin_type.is_empty() {
        return Err(in_version(CniError::invalid_config(
            "type: missing plugin type",
        )));
    }
    validate::network_name(&conf.name).map_err(in_version)?;
    let needed = match command {
        Command::Check => Some(Version::V0_4_0),
        Command::Status | Command::Gc => Some(Version::V1_1_0),
        _ => None,
    };
    if let Some(needed) = needed {
        if version < needed {
            return Err(in_version(CniError::incompatible_version(format!(
                "cniVersion: {} does not support {} (needs {needed} or later)",
                version,
                command.as_str()
            ))));
        }
    }
    let cni_path = get("CNI_PATH")
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    Ok(Request {
        command,
        container_id,
        netns,
        ifname,
        args: get("CNI_ARGS").unwrap_or_default(),
        cni_path,
        stdin: bytes,
        version,
        conf,
        raw,
    })
}

/// The attachment's CNI_CONTAINERID, CNI_IFNAME and CNI_NETNS, checked (code 4 naming the
/// variables); all empty for GC and STATUS. CNI_PATH and CNI_ARGS are optional for every verb.
fn attachment_env(
    command: Command,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String, Option<PathBuf>)> {
    let per_attachment = command.is_per_attachment();
    let mut missing = Vec::new();
    if per_attachment {
        for var in ["CNI_CONTAINERID", "CNI_IFNAME"] {
            if get(var).is_none() {
                missing.push(var);
            }
        }
    }
    if matches!(command, Command::Add | Command::Check) && get("CNI_NETNS").is_none() {
        missing.push("CNI_NETNS");
    }
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "required environment variables missing for {}: {}",
            command.as_str(),
            missing.join(", ")
        )));
    }
    if !per_attachment {
        return Ok((String::new(), String::new(), None));
    }
    let cid = get("CNI_CONTAINERID").unwrap_or_default();
    validate::container_id(&cid)?;
    let ifname = get("CNI_IFNAME").unwrap_or_default();
    validate::ifname(&ifname)?;
    Ok((cid, ifname, get("CNI_NETNS").map(PathBuf::from)))
}

/// The configuration bytes from stdin, at most [`MAX_STDIN`].
fn read_stdin(stdin: &mut dyn Read) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    stdin
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CniError::io(format!("reading the configuration from stdin: {e}")))?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(CniError::decode(format!(
            "stdin: the configuration is larger than {} MiB",
            MAX_STDIN >> 20
        )));
    }
    Ok(bytes)
}

/// The version of an error raised before the configuration was decoded: its `cniVersion` when
/// it is a JSON object with one we know (absent or empty is 0.1.0, as for its results), the
/// latest otherwise. Runs on error paths only.
fn version_hint(bytes: &[u8]) -> Version {
    let Ok(Value::Object(top)) = serde_json::from_slice::<Value>(bytes) else {
        return Version::LATEST;
    };
    let given = match top.get("cniVersion") {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => return Version::LATEST,
    };
    Version::parse_config_version(given).unwrap_or(Version::LATEST)
}
