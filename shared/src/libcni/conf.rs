//! Network configuration lists, loaded the way libcni loads them: `.conflist` files first, then
//! single-plugin `.conf`/`.json` files (each becomes a one-element list), all sorted by file name;
//! the network is picked by its `name`. The list's spec version is negotiated from `cniVersions`
//! and `cniVersion`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{CniError, Result};
use crate::spec::Version;
use crate::validate;

/// One plugin of a list: its `type` and its configuration object exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    pub plugin_type: String,
    /// The object as written (libcni injects into the raw bytes, so unknown keys survive).
    pub raw: Map<String, Value>,
}

impl PluginConfig {
    /// Decode one plugin object: it needs a non-empty string `type`; `capabilities`, when
    /// present, must map names to booleans (libcni's `map[string]bool`).
    pub fn from_value(value: Value) -> Result<PluginConfig> {
        let Value::Object(raw) = value else {
            return Err(CniError::invalid_config(
                "plugin configuration must be a JSON object",
            ));
        };
        let plugin_type = match raw.get("type") {
            Some(Value::String(t)) if !t.is_empty() => t.clone(),
            Some(Value::String(_)) | None => {
                return Err(CniError::invalid_config("type: missing plugin type"))
            }
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "type: must be a string, got {other}"
                )))
            }
        };
        match raw.get("capabilities") {
            None | Some(Value::Null) => {}
            Some(Value::Object(caps)) => {
                if let Some((k, v)) = caps.iter().find(|(_, v)| !v.is_boolean()) {
                    return Err(CniError::invalid_config(format!(
                        "capabilities.{k}: must be true or false, got {v}"
                    )));
                }
            }
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "capabilities: must be an object, got {other}"
                )))
            }
        }
        Ok(PluginConfig { plugin_type, raw })
    }

    /// The capabilities this plugin declares `true`.
    pub fn capabilities(&self) -> impl Iterator<Item = &str> {
        self.raw
            .get("capabilities")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter(|(_, on)| on.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
    }

    /// `type="bridge"` plus ` name="..."` when the plugin object has its own name (libcni's
    /// wording in chain errors).
    pub fn description(&self) -> String {
        let mut out = format!("type={:?}", self.plugin_type);
        if let Some(name) = self.raw.get("name").and_then(Value::as_str) {
            if !name.is_empty() {
                out.push_str(&format!(" name={name:?}"));
            }
        }
        out
    }
}

/// A network: a name, a negotiated spec version and a chain of plugins.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    pub name: String,
    /// The version every plugin of the chain is called with.
    pub cni_version: Version,
    /// CHECK is a no-op success.
    pub disable_check: bool,
    /// GC does nothing (no stale DELs, no plugin GC).
    pub disable_gc: bool,
    /// Do not load plugin drop-ins from `<dir>/<name>/*.conf`.
    pub load_only_inlined_plugins: bool,
    pub plugins: Vec<PluginConfig>,
    /// The bytes the list was parsed from (cached with every attachment, as libcni does).
    pub bytes: Vec<u8>,
}

impl NetworkConfigList {
    /// Parse a configuration list (`{"cniVersion","name","plugins":[...]}`).
    pub fn from_bytes(bytes: &[u8]) -> Result<NetworkConfigList> {
        let list = parse_list(bytes)?;
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config("plugins: no plugins in list"));
        }
        Ok(list)
    }

    /// Upconvert a single-plugin configuration (a `.conf` file): a one-element list whose
    /// `name` and `cniVersion` are the plugin's.
    pub fn from_conf_bytes(bytes: &[u8]) -> Result<NetworkConfigList> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::decode(format!("error parsing configuration: {e}")))?;
        let plugin = PluginConfig::from_value(value)?;
        let field = |k: &str| plugin.raw.get(k).cloned().unwrap_or(Value::from(""));
        let mut list = Map::new();
        list.insert("name".into(), field("name"));
        list.insert("cniVersion".into(), field("cniVersion"));
        list.insert(
            "plugins".into(),
            Value::Array(vec![Value::Object(plugin.raw)]),
        );
        let bytes = serde_json::to_vec(&Value::Object(list))
            .map_err(|e| CniError::internal(format!("encoding configuration list: {e}")))?;
        NetworkConfigList::from_bytes(&bytes)
    }

    /// Load a `.conflist` file, with the plugin drop-ins in `<dir>/<name>/*.conf` appended
    /// unless `loadOnlyInlinedPlugins` is set.
    pub fn from_file(path: &Path) -> Result<NetworkConfigList> {
        let bytes = read(path)?;
        let mut list = parse_list(&bytes).map_err(|e| e.context(path.display()))?;
        if !list.load_only_inlined_plugins && validate::is_safe_name(&list.name) {
            let dir = path.parent().unwrap_or(Path::new(".")).join(&list.name);
            for file in conf_files(&dir, &["conf"])? {
                let value: Value = serde_json::from_slice(&read(&file)?).map_err(|e| {
                    CniError::decode(format!(
                        "{}: error parsing configuration: {e}",
                        file.display()
                    ))
                })?;
                let plugin =
                    PluginConfig::from_value(value).map_err(|e| e.context(file.display()))?;
                list.plugins.push(plugin);
            }
        }
        if list.plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "{}: no plugin configs found",
                path.display()
            )));
        }
        Ok(list)
    }
}

fn parse_list(bytes: &[u8]) -> Result<NetworkConfigList> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::decode(format!("error parsing configuration list: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(CniError::decode(
            "error parsing configuration list: expected a JSON object",
        ));
    };
    let name = match obj.get("name") {
        Some(Value::String(n)) => n.clone(),
        None => return Err(CniError::invalid_config("name: missing network name")),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "name: must be a string, got {other}"
            )))
        }
    };
    let cni_version = match obj.get("cniVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "cniVersion: must be a string, got {other}"
            )))
        }
    };
    let cni_versions = match obj.get("cniVersions") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        CniError::invalid_config(format!("cniVersions[{i}]: must be a string"))
                    })
                })
                .collect::<Result<Vec<String>>>()?,
        ),
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "cniVersions: must be a list of strings, got {other}"
            )))
        }
    };
    let cni_version = negotiate_version(cni_version, cni_versions.as_deref())?;
    let plugins = match obj.get("plugins") {
        None => Vec::new(),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(CniError::invalid_config("plugins: no plugins in list"))
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                PluginConfig::from_value(p.clone()).map_err(|e| e.context(format!("plugins[{i}]")))
            })
            .collect::<Result<Vec<_>>>()?,
        Some(other) => {
            return Err(CniError::invalid_config(format!(
                "plugins: must be a list, got {other}"
            )))
        }
    };
    let load_only_inlined_plugins = read_bool(&obj, "loadOnlyInlinedPlugins")?;
    if load_only_inlined_plugins && !obj.contains_key("plugins") {
        return Err(CniError::invalid_config(
            "loadOnlyInlinedPlugins is true, and there is no 'plugins' key",
        ));
    }
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: read_bool(&obj, "disableCheck")?,
        disable_gc: read_bool(&obj, "disableGC")?,
        load_only_inlined_plugins,
        plugins,
        bytes: bytes.to_vec(),
    })
}

/// A boolean key that may also be written as the string "true"/"false" (any case), as libcni
/// accepts.
fn read_bool(obj: &Map<String, Value>, key: &str) -> Result<bool> {
    match obj.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(CniError::invalid_config(format!(
            "{key}: must be true or false, got {other}"
        ))),
    }
}

/// The spec version of a list. With `cniVersions` (CNI 1.1): the highest version among it and
/// `cniVersion` that we implement; entries we do not implement (newer, or unknown) are skipped,
/// entries that are not versions at all are an error. Without it: `cniVersion`, absent or empty
/// meaning 0.1.0.
pub fn negotiate_version(
    cni_version: Option<&str>,
    cni_versions: Option<&[String]>,
) -> Result<Version> {
    let Some(list) = cni_versions else {
        return Version::parse_config_version(cni_version);
    };
    let mut best: Option<Version> = None;
    let single = cni_version.filter(|s| !s.is_empty());
    for (i, s) in list.iter().map(String::as_str).chain(single).enumerate() {
        if !looks_like_version(s) {
            let at = if i < list.len() {
                format!("cniVersions[{i}]")
            } else {
                "cniVersion".to_string()
            };
            return Err(CniError::invalid_config(format!(
                "{at}: {s:?} is not a version"
            )));
        }
        match s.parse::<Version>() {
            Ok(v) => best = best.max(Some(v)),
            Err(_) => tracing::debug!(version = s, "skipping a spec version we do not implement"),
        }
    }
    best.ok_or_else(|| {
        CniError::incompatible_version(format!(
            "cniVersions: none of {list:?} (nor cniVersion {:?}) is a version we implement ({})",
            cni_version.unwrap_or_default(),
            Version::ALL.map(Version::as_str).join(", ")
        ))
    })
}

/// `MAJOR.MINOR.PATCH` with decimal numbers.
fn looks_like_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The files in `dir` whose extension is one of `exts`, sorted by name; none when `dir` does
/// not exist.
pub fn conf_files(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CniError::io(format!("reading {}: {e}", dir.display()))),
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().map(|t| !t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| CniError::io(format!("reading {}: {e}", path.display())))
}

/// The `name` of a configuration file, or why it could not be read.
fn peek_name(path: &Path) -> Result<String> {
    let value: Value = serde_json::from_slice(&read(path)?)
        .map_err(|e| CniError::decode(format!("{}: malformed JSON: {e}", path.display())))?;
    match value.get("name") {
        Some(Value::String(n)) => Ok(n.clone()),
        _ => Err(CniError::invalid_config(format!(
            "{}: name: missing network name",
            path.display()
        ))),
    }
}

/// Find network `name` in `dir`: `.conflist` files first, then `.conf`/`.json`, each group sorted
/// by file name; the first match wins. A file that cannot be read or parsed is logged and
/// skipped, so one broken file does not take the other networks down; it is named in the error
/// when the network is not found. Errors in the matching file itself are returned.
pub fn load_network_conf(dir: &Path, name: &str) -> Result<NetworkConfigList> {
    let lists = conf_files(dir, &["conflist"])?;
    let singles = conf_files(dir, &["conf", "json"])?;
    let mut broken = Vec::new();
    for (path, is_list) in lists
        .iter()
        .map(|p| (p, true))
        .chain(singles.iter().map(|p| (p, false)))
    {
        match peek_name(path) {
            Ok(n) if n == name => {
                return if is_list {
                    NetworkConfigList::from_file(path)
                } else {
                    NetworkConfigList::from_conf_bytes(&read(path)?)
                        .map_err(|e| e.context(path.display()))
                };
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!("skipping network configuration: {}", e.msg);
                broken.push(e.msg);
            }
        }
    }
    if lists.is_empty() && singles.is_empty() {
        return Err(CniError::invalid_config(format!(
            "no net configurations found in {}",
            dir.display()
        )));
    }
    let mut msg = format!(
        "no net configuration with name {name:?} in {}",
        dir.display()
    );
    if !broken.is_empty() {
        msg.push_str(&format!(" (unreadable: {})", broken.join("; ")));
    }
    Err(CniError::invalid_config(msg))
}
