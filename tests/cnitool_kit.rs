//! Driving the built `cnitool` like a runtime does, with fake plugins that record what they get.
//!
//! A fake plugin is a shell script in a temporary CNI_PATH directory. Every call records its
//! stdin (`NNN-<plugin>-<COMMAND>.json`) and its `CNI_*` environment (`.env`) in a recording
//! directory, numbered in call order; then it answers as its [`Fake`] behaviour says.
//!
//! Test support: panics on a broken test environment, which is how a test fails.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::testkit::{bin_dir, write_executable, Cnitool, Sandbox, TempDir};

/// How a fake plugin answers.
#[derive(Debug, Clone)]
pub enum Fake {
    /// ADD prints this result (ignoring any prevResult).
    Result(Value),
    /// ADD prints its prevResult back (a meta plugin such as portmap).
    Pass,
    /// Fails `command` with this CNI error; otherwise behaves like `Pass`.
    Fail {
        command: &'static str,
        code: u32,
        msg: &'static str,
    },
}

/// Prints the `prevResult` object of the compact JSON on stdin (string-aware brace matching).
const EXTRACT_PREV: &str = r#"awk '{
  i = index($0, "\"prevResult\":"); if (i == 0) exit
  s = substr($0, i + 13); d = 0; q = 0; o = ""
  for (k = 1; k <= length(s); k++) {
    c = substr(s, k, 1); o = o c
    if (q) { if (c == "\\") { k++; o = o substr(s, k, 1) } else if (c == "\"") q = 0 }
    else if (c == "\"") q = 1
    else if (c == "{") d++
    else if (c == "}") { d--; if (d == 0) break }
  }
  printf "%s", o
}'"#;

/// The test's world: a sandbox host to run cnitool in, a container namespace, and temporary
/// directories for configurations, fake plugins, recordings and the result cache.
pub struct World {
    pub host: Sandbox,
    pub ctr: Sandbox,
    pub conf: TempDir,
    pub plugins: TempDir,
    pub rec: TempDir,
    pub cache: TempDir,
}

/// What one cnitool run printed.
pub type Run = crate::testkit::CnitoolRun;

/// One recorded plugin call.
#[derive(Debug, Clone)]
pub struct Call {
    pub plugin: String,
    pub command: String,
    pub stdin: Value,
    pub env: BTreeMap<String, String>,
}

impl World {
    pub fn new(label: &str) -> World {
        World {
            host: Sandbox::new(&format!("{label}-h")),
            ctr: Sandbox::new(&format!("{label}-c")),
            conf: TempDir::new(&format!("{label}-conf")),
            plugins: TempDir::new(&format!("{label}-bin")),
            rec: TempDir::new(&format!("{label}-rec")),
            cache: TempDir::new(&format!("{label}-cache")),
        }
    }

    /// Write `NETCONFPATH/<file>`.
    pub fn conf(&self, file: &str, v: &Value) {
        std::fs::write(self.conf.path().join(file), serde_json::to_vec(v).unwrap()).unwrap();
    }

    /// Install fake plugin `name`.
    pub fn fake(&self, name: &str, how: Fake) {
        let add = match &how {
            Fake::Result(r) => format!("echo '{r}'"),
            _ => format!(
                "prev=$(printf '%s' \"$stdin\" | {EXTRACT_PREV})\n    \
                 [ -n \"$prev\" ] || {{ echo '{{\"code\":7,\"msg\":\"no prevResult\"}}'; exit 1; }}\n    \
                 printf '%s' \"$prev\""
            ),
        };
        let fail = match how {
            Fake::Fail { command, code, msg } => format!(
                "if [ \"$CNI_COMMAND\" = {command} ]; then\n  \
                 echo '{{\"cniVersion\":\"1.1.0\",\"code\":{code},\"msg\":\"{msg}\",\"details\":\"from {name}\"}}'\n  \
                 exit 1\nfi\n"
            ),
            _ => String::new(),
        };
        let script = format!(
            "#!/bin/sh\nrec='{rec}'\nname=$(basename \"$0\")\nstdin=$(cat)\n\
             n=$(cat \"$rec/.seq\" 2>/dev/null || echo 0); n=$((n + 1)); echo \"$n\" > \"$rec/.seq\"\n\
             tag=$(printf '%03d' \"$n\")-$name-$CNI_COMMAND\n\
             printf '%s' \"$stdin\" > \"$rec/$tag.json\"\n\
             env | grep '^CNI_' | sort > \"$rec/$tag.env\"\n\
             {fail}case \"$CNI_COMMAND\" in\n  \
             VERSION) echo '{{\"cniVersion\":\"1.1.0\",\"supportedVersions\":[\"0.4.0\",\"1.0.0\",\"1.1.0\"]}}' ;;\n  \
             ADD)\n    {add} ;;\nesac\n",
            rec = self.rec.path().display(),
        );
        let path = self.plugins.path().join(name);
        write_executable(&path, script);
    }

    /// Run `cnitool <args>` inside the sandbox host with NETCONFPATH, CNI_PATH (fake plugins,
    /// then the built ones) and CNI_CACHE_DIR set, plus `env`; bounded in time.
    pub fn cnitool(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Cnitool::new(&self.host, self.conf.path(), self.cache.path())
            .cni_path(format!(
                "{}:{}",
                self.plugins.path().display(),
                bin_dir().display()
            ))
            .run(args, env)
    }

    /// The netns path of the container sandbox, as a string.
    pub fn netns(&self) -> &str {
        self.ctr.path().to_str().unwrap()
    }

    /// Every recorded plugin call so far, in call order; the recordings are then cleared.
    pub fn take_calls(&self) -> Vec<Call> {
        let mut names: Vec<String> = std::fs::read_dir(self.rec.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        let calls = names
            .iter()
            .map(|n| {
                let stem = n.trim_end_matches(".json");
                let mut parts = stem.splitn(2, '-');
                parts.next();
                let rest = parts.next().unwrap();
                let (plugin, command) = rest.rsplit_once('-').unwrap();
                let p = self.rec.path().join(n);
                let env = std::fs::read_to_string(p.with_extension("env")).unwrap();
                Call {
                    plugin: plugin.to_string(),
                    command: command.to_string(),
                    stdin: serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
                    env: env
                        .lines()
                        .filter_map(|l| l.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }
            })
            .collect();
        for e in std::fs::read_dir(self.rec.path()).unwrap().flatten() {
            std::fs::remove_file(e.path()).unwrap();
        }
        calls
    }

    /// The cache file of an attachment.
    pub fn cache_file(&self, net: &str, cid: &str, ifname: &str) -> PathBuf {
        self.cache
            .path()
            .join("results")
            .join(format!("{net}-{cid}-{ifname}"))
    }
}

/// `(plugin, command)` of each call, for order checks.
pub fn sequence(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| (c.plugin.clone(), c.command.clone()))
        .collect()
}

/// The file mode bits of a path.
pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
