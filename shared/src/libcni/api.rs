//! Running a configuration list's chain (SPEC.md "Execution of Network Configurations"), as
//! libcni's `CNIConfig` does.

use std::path::PathBuf;

use serde_json::Value;

use super::cache::{CachedAttachment, ResultCache, CACHE_KIND_V1};
use super::conf::{NetworkConfigList, PluginConfig};
use super::inject::{build_plugin_config, encode, inject};
use super::RuntimeConf;
use crate::error::{CniError, Result};
use crate::invoke::{self, PluginEnv};
use crate::skel::Command;
use crate::spec::{CniResult, GcAttachment, Version};
use crate::validate;

/// Where plugins are found and where results are cached.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// The plugin directories (CNI_PATH), searched in order.
    pub path: Vec<PathBuf>,
    pub cache: ResultCache,
}

impl CniConfig {
    pub fn new(path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> CniConfig {
        CniConfig {
            path,
            cache: ResultCache::new(cache_dir),
        }
    }

    fn env(&self, rt: &RuntimeConf) -> PluginEnv {
        PluginEnv {
            container_id: rt.container_id.clone(),
            netns: (!rt.netns.is_empty()).then(|| PathBuf::from(&rt.netns)),
            ifname: rt.ifname.clone(),
            args: rt.args_string(),
            cni_path: self.path.clone(),
        }
    }

    fn exec(
        &self,
        plugin: &PluginConfig,
        command: Command,
        env: &PluginEnv,
        stdin: &[u8],
    ) -> Result<Vec<u8>> {
        let program = invoke::find_plugin(&plugin.plugin_type, &self.path)?;
        tracing::debug!(plugin = %plugin.plugin_type, cmd = command.as_str(), "executing");
        invoke::exec(&program, command, env, stdin)
    }

    /// ADD: run the chain in order, each plugin after the first with the previous result as
    /// `prevResult`; cache and return the final result (JSON in the list's version). On failure
    /// nothing is cached and nothing is undone: the runtime is expected to DEL.
    pub fn add_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<Value> {
        validate_attachment(list, rt)?;
        let env = self.env(rt);
        let mut prev: Option<Value> = None;
        for plugin in &list.plugins {
            let stdin =
                build_plugin_config(&list.name, list.cni_version, plugin, prev.as_ref(), rt)?;
            let result = self
                .exec(plugin, Command::Add, &env, &stdin)
                .and_then(|out| result_in_version(&out, list.cni_version))
                .map_err(|e| e.context(format!("plugin {} failed (add)", plugin.description())))?;
            prev = Some(result);
        }
        let result = prev.ok_or_else(|| CniError::invalid_config("plugins: no plugins in list"))?;
        self.cache
            .save(&CachedAttachment {
                kind: CACHE_KIND_V1.to_string(),
                container_id: rt.container_id.clone(),
                config: list.bytes.clone(),
                ifname: rt.ifname.clone(),
                network_name: list.name.clone(),
                netns: rt.netns.clone(),
                cni_args: rt.args.clone(),
                capability_args: rt.capability_args.clone(),
                result: Some(result.clone()),
            })
            .map_err(|e| {
                e.context(format!(
                    "failed to set network {:?} cached result",
                    list.name
                ))
            })?;
        Ok(result)
    }

    /// The cached ADD result of an attachment, in the list's version.
    pub fn cached_result(
        &self,
        list: &NetworkConfigList,
        rt: &RuntimeConf,
    ) -> Result<Option<Value>> {
        self.cache
            .result(&list.name, &rt.container_id, &rt.ifname, list.cni_version)
    }

    /// CHECK: run the chain in order with the cached result as `prevResult`, stopping at the
    /// first failure. Needs spec ≥ 0.4.0; a no-op with `disableCheck`; an error (code 3) when
    /// nothing is cached for the attachment.
    pub fn check_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        if list.cni_version < Version::V0_4_0 {
            return Err(CniError::incompatible_version(format!(
                "configuration version {:?} does not support the CHECK command",
                list.cni_version.as_str()
            )));
        }
        if list.disable_check {
            return Ok(());
        }
        validate_attachment(list, rt)?;
        let cached = self
            .cached_result(list, rt)
            .map_err(|e| {
                e.context(format!(
                    "failed to get network {:?} cached result",
                    list.name
                ))
            })?
            .ok_or_else(|| {
                CniError::unknown_container(format!(
                    "no cached result for network {:?}, container {:?}, ifname {:?}: it was \
                     not added (or was deleted)",
                    list.name, rt.container_id, rt.ifname
                ))
            })?;
        let env = self.env(rt);
        for plugin in &list.plugins {
            let stdin =
                build_plugin_config(&list.name, list.cni_version, plugin, Some(&cached), rt)?;
            self.exec(plugin, Command::Check, &env, &stdin)
                .map_err(|e| {
                    e.context(format!("plugin {} failed (check)", plugin.description()))
                })?;
        }
        Ok(())
    }

    /// DEL: run the chain in reverse with the cached result as `prevResult` (spec ≥ 0.4.0; an
    /// unreadable entry is dropped and DEL goes on without it), stopping at the first failure as
    /// libcni and the spec do; the cache entry is removed after a successful DEL.
    pub fn del_network_list(&self, list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
        validate_attachment(list, rt)?;
        let cached = if list.cni_version >= Version::V0_4_0 {
            match self.cached_result(list, rt) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("dropping unusable cached result: {e}");
                    let _ = self.cache.remove(&list.name, &rt.container_id, &rt.ifname);
                    None
                }
            }
        } else {
            None
        };
        let env = self.env(rt);
        for plugin in list.plugins.iter().rev() {
            let stdin =
                build_plugin_config(&list.name, list.cni_version, plugin, cached.as_ref(), rt)?;
            self.exec(plugin, Command::Del, &env, &stdin).map_err(|e| {
                e.context(format!("plugin {} failed (delete)", plugin.description()))
            })?;
        }
        if let Err(e) = self.cache.remove(&list.name, &rt.container_id, &rt.ifname) {
            tracing::warn!("{e}");
        }
        Ok(())
    }

    /// GC: DEL every cached attachment of this network that is not in `valid`, then (spec ≥
    /// 1.1.0) send GC to every plugin with `cni.dev/valid-attachments` and `cni.dev/attachments`
    /// set to `valid`. Keeps going after failures and returns them together (the first one's
    /// code). A no-op with `disableGC`.
    pub fn gc_network_list(&self, list: &NetworkConfigList, valid: &[GcAttachment]) -> Result<()> {
        if list.disable_gc {
            return Ok(());
        }
        let mut errors = Vec::new();
        let valid_set: std::collections::HashSet<&GcAttachment> = valid.iter().collect();
        let stale = self
            .cache
            .stale_attachments(&list.name, &valid_set)
            .unwrap_or_else(|e| {
                errors.push(e.context("listing cached attachments"));
                Vec::new()
            });
        for att in &stale {
            let rt = RuntimeConf {
                container_id: att.container_id.clone(),
                netns: att.netns.clone(),
                ifname: att.ifname.clone(),
                args: att.cni_args.clone(),
                capability_args: att.capability_args.clone(),
            };
            tracing::info!(container = %rt.container_id, ifname = %rt.ifname, "deleting stale attachment");
            if let Err(e) = self.del_network_list(list, &rt) {
                errors.push(e.context(format!(
                    "failed to delete stale attachment {} {}",
                    rt.container_id, rt.ifname
                )));
            }
        }
        if list.cni_version >= Version::V1_1_0 {
            let valid_json = serde_json::to_value(valid)
                .map_err(|e| CniError::internal(format!("encoding valid attachments: {e}")))?;
            let env = self.env(&RuntimeConf::default());
            for plugin in &list.plugins {
                let conf = inject(
                    plugin,
                    vec![
                        ("name", Value::from(list.name.as_str())),
                        ("cniVersion", Value::from(list.cni_version.as_str())),
                        ("cni.dev/valid-attachments", valid_json.clone()),
                        ("cni.dev/attachments", valid_json.clone()),
                    ],
                );
                if let Err(e) = encode(conf).and_then(|s| self.exec(plugin, Command::Gc, &env, &s))
                {
                    errors.push(e.context(format!("failed to GC plugin {}", plugin.description())));
                }
            }
        }
        join_errors(errors)
    }

    /// STATUS: ask every plugin in order (spec ≥ 1.1.0; older lists are always ready); the first
    /// failure is returned with its code (50/51 say "not available").
    pub fn status_network_list(&self, list: &NetworkConfigList) -> Result<()> {
        if list.cni_version < Version::V1_1_0 {
            return Ok(());
        }
        let env = self.env(&RuntimeConf::default());
        for plugin in &list.plugins {
            let conf = inject(
                plugin,
                vec![
                    ("name", Value::from(list.name.as_str())),
                    ("cniVersion", Value::from(list.cni_version.as_str())),
                ],
            );
            encode(conf)
                .and_then(|s| self.exec(plugin, Command::Status, &env, &s))
                .map_err(|e| {
                    e.context(format!("plugin {} failed (status)", plugin.description()))
                })?;
        }
        Ok(())
    }
}

/// A plugin's ADD output as a result in `version` (plugins should answer in the config's
/// version; one that does not is converted, so the next plugin gets what it expects).
fn result_in_version(out: &[u8], version: Version) -> Result<Value> {
    let (_, result) = CniResult::from_slice(out, version)?;
    result.to_value(version)
}

/// The names that become cache file names and plugin environment (libcni validates them on ADD;
/// we do on every per-attachment verb).
fn validate_attachment(list: &NetworkConfigList, rt: &RuntimeConf) -> Result<()> {
    validate::network_name(&list.name)?;
    validate::container_id(&rt.container_id)?;
    validate::ifname(&rt.ifname)
}

fn join_errors(errors: Vec<CniError>) -> Result<()> {
    let mut it = errors.into_iter();
    let Some(first) = it.next() else {
        return Ok(());
    };
    Err(it.fold(first, |mut acc, e| {
        acc.msg = format!("{}; {} (CNI error {})", acc.msg, e.msg, e.code);
        acc
    }))
}
