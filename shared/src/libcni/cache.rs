//! The result cache, in libcni's format and place, so this crate and a libcni runtime read each
//! other's entries: `<cacheDir>/results/<network>-<containerID>-<ifname>`, a JSON object of kind
//! `cniCacheV1` holding the attachment (container, ifname, netns, CNI_ARGS, capability args), the
//! configuration list bytes (base64, as Go encodes `[]byte`) and the ADD result. Files are 0600
//! in a 0700 directory and replaced atomically.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::{CniError, Result};
use crate::fsutil::{self, Durability};
use crate::spec::{CniResult, GcAttachment, Version};

/// The `kind` of a cache entry written by libcni ≥ 0.8.
pub const CACHE_KIND_V1: &str = "cniCacheV1";
/// libcni's default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One cached attachment, field for field what libcni writes (and in its order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAttachment {
    #[serde(default)]
    pub kind: String,
    #[serde(rename = "containerId", default)]
    pub container_id: String,
    /// The configuration list the attachment was made with.
    #[serde(default, with = "go_bytes")]
    pub config: Vec<u8>,
    #[serde(rename = "ifName", default)]
    pub ifname: String,
    #[serde(rename = "networkName", default)]
    pub network_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    /// The ADD result, in the version the list was added with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

impl CachedAttachment {
    /// The attachment's identity for GC.
    pub fn gc_attachment(&self) -> GcAttachment {
        GcAttachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// Go encodes `[]byte` as standard base64 with padding, and `nil` as `null`.
mod go_bytes {
    use super::*;

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map_err(serde::de::Error::custom),
        }
    }
}

/// A result cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

impl ResultCache {
    /// The cache rooted at `dir` (libcni's `CacheDir`; entries live in `dir/results`).
    pub fn new(dir: impl Into<PathBuf>) -> ResultCache {
        ResultCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// `<dir>/results/<network>-<containerID>-<ifname>`; all three are required.
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> Result<PathBuf> {
        if network.is_empty() || container_id.is_empty() || ifname.is_empty() {
            return Err(CniError::invalid_config(format!(
                "cache file path requires network name ({network:?}), container ID \
                 ({container_id:?}), and interface name ({ifname:?})"
            )));
        }
        Ok(self
            .results_dir()
            .join(format!("{network}-{container_id}-{ifname}")))
    }

    /// Write an entry (0600, in a 0700 directory created as needed), replacing any old one.
    pub fn save(&self, entry: &CachedAttachment) -> Result<PathBuf> {
        let path = self.path(&entry.network_name, &entry.container_id, &entry.ifname)?;
        let bytes = serde_json::to_vec(entry)
            .map_err(|e| CniError::internal(format!("encoding cache entry: {e}")))?;
        let dir = self.results_dir();
        fsutil::ensure_dir(&dir, 0o700)
            .map_err(|e| CniError::io(format!("creating {}: {e}", dir.display())))?;
        fsutil::write_atomic(&path, &bytes, 0o600, Durability::BestEffort)
            .map_err(|e| CniError::io(format!("writing {}: {e}", path.display())))?;
        Ok(path)
    }

    /// The raw bytes of an entry; `None` when it does not exist or cannot be read (libcni
    /// treats an unreadable entry as absent).
    fn read(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(network, container_id, ifname)?;
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("ignoring unreadable cache entry {}: {e}", path.display());
                }
                Ok(None)
            }
        }
    }

    /// The `cniCacheV1` entry of an attachment; `None` when absent, an error when the file is
    /// not such an entry.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>> {
        let Some(bytes) = self.read(network, container_id, ifname)? else {
            return Ok(None);
        };
        let entry: CachedAttachment = serde_json::from_slice(&bytes).map_err(|e| {
            CniError::decode(format!(
                "failed to unmarshal cached network {network:?}: {e}"
            ))
        })?;
        if entry.kind != CACHE_KIND_V1 {
            return Err(CniError::decode(format!(
                "cached network {network:?} has wrong kind: {:?}",
                entry.kind
            )));
        }
        Ok(Some(entry))
    }

    /// The cached ADD result, converted to `version` (the list's version, so plugins get
    /// `prevResult` in the version of their config). A file that is not a `cniCacheV1` entry is
    /// read as a bare result (libcni's pre-0.8 layout). `None` when nothing is cached.
    pub fn result(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
        version: Version,
    ) -> Result<Option<Value>> {
        let Some(bytes) = self.read(network, container_id, ifname)? else {
            return Ok(None);
        };
        let raw = match serde_json::from_slice::<CachedAttachment>(&bytes) {
            Ok(entry) if entry.kind == CACHE_KIND_V1 => entry.result.ok_or_else(|| {
                CniError::decode(format!("cached network {network:?} has no result"))
            })?,
            _ => serde_json::from_slice::<Value>(&bytes).map_err(|e| {
                CniError::decode(format!("cached result of network {network:?}: {e}"))
            })?,
        };
        let (_, result) = CniResult::from_value(&raw, version)?;
        let converted = result.to_value(version).map_err(|e| {
            e.context(format!(
                "failed to convert cached result to config version {:?}",
                version.as_str()
            ))
        })?;
        Ok(Some(converted))
    }

    /// Remove an entry; an absent one is fine.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<()> {
        let path = self.path(network, container_id, ifname)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CniError::io(format!("removing {}: {e}", path.display()))),
        }
    }

    /// Every readable `cniCacheV1` entry with a network and ifname, by file name; only
    /// `container_id`'s when given. No results directory means no entries.
    pub fn attachments(&self, container_id: Option<&str>) -> Result<Vec<CachedAttachment>> {
        let id = container_id.filter(|id| !id.is_empty());
        let marker = id.map(|id| format!("-{id}-"));
        self.entries(
            |name| marker.as_ref().is_none_or(|m| name.contains(m.as_str())),
            |e| id.is_none_or(|id| e.container_id == id),
        )
    }

    /// GC's question: the entries of `network` whose attachment is not in `valid`. Only files
    /// that may hold one are read: a name that does not start with `<network>-` is another
    /// network's, and the file named after a valid attachment is that attachment's (a node's
    /// cache has an entry per attachment, and reading and decoding each was most of a GC's
    /// time in the runtime at 1000 containers). Two attachments can share a file name only
    /// when a container ID and an ifname both hold a `-` at matching places, and then libcni
    /// keeps only the entry written last either way.
    pub fn stale_attachments(
        &self,
        network: &str,
        valid: &HashSet<&GcAttachment>,
    ) -> Result<Vec<CachedAttachment>> {
        let prefix = format!("{network}-");
        let valid_names: HashSet<String> = valid
            .iter()
            .map(|a| format!("{network}-{}-{}", a.container_id, a.ifname))
            .collect();
        self.entries(
            |name| name.starts_with(&prefix) && !valid_names.contains(name),
            |e| e.network_name == network && !valid.contains(&e.gc_attachment()),
        )
    }

    /// The entries whose file name `read_name` accepts and whose content `keep` does, in file
    /// name order; unreadable files and entries of another kind are skipped, as libcni does.
    fn entries(
        &self,
        read_name: impl Fn(&str) -> bool,
        keep: impl Fn(&CachedAttachment) -> bool,
    ) -> Result<Vec<CachedAttachment>> {
        let dir = self.results_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CniError::io(format!("reading {}: {e}", dir.display()))),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && read_name(n))
            .collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Ok(bytes) = std::fs::read(dir.join(&name)) else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<CachedAttachment>(&bytes) else {
                continue;
            };
            if entry.kind != CACHE_KIND_V1
                || entry.ifname.is_empty()
                || entry.network_name.is_empty()
                || !keep(&entry)
            {
                continue;
            }
            out.push(entry);
        }
        Ok(out)
    }
}
