//! What one plugin of a chain gets on stdin (SPEC.md "Deriving execution configuration from
//! plugin configuration"): its own object as written, without `capabilities` (the runtime
//! removes it), with the list's `name` and negotiated `cniVersion` injected, the previous result
//! as `prevResult`, and a `runtimeConfig` holding only the capability arguments the plugin
//! declares.

use serde_json::{Map, Value};

use super::conf::PluginConfig;
use super::RuntimeConf;
use crate::error::{CniError, Result};
use crate::spec::Version;

/// The capability arguments `plugin` declares `true` in its `capabilities`, and nothing else.
pub fn runtime_config_for(
    plugin: &PluginConfig,
    capability_args: &Map<String, Value>,
) -> Map<String, Value> {
    plugin
        .capabilities()
        .filter_map(|cap| {
            capability_args
                .get(cap)
                .map(|v| (cap.to_string(), v.clone()))
        })
        .collect()
}

/// The plugin's object with `values` set at the top level (libcni's `InjectConf`) and its
/// `capabilities` removed: SPEC.md has the runtime remove that key for every verb, since it is
/// the runtime's to read (see [`runtime_config_for`]), not the plugin's.
pub fn inject(plugin: &PluginConfig, values: Vec<(&str, Value)>) -> Map<String, Value> {
    let mut conf = plugin.raw.clone();
    conf.remove("capabilities");
    for (k, v) in values {
        conf.insert(k.to_string(), v);
    }
    conf
}

/// The stdin of one ADD, CHECK or DEL: `name`, `cniVersion`, `prevResult` (when there is one)
/// and, when the plugin declares a capability the runtime passed, `runtimeConfig`. As in libcni,
/// a `runtimeConfig` written in the file is replaced only when some capability matched.
pub fn build_plugin_config(
    network: &str,
    version: Version,
    plugin: &PluginConfig,
    prev_result: Option<&Value>,
    rt: &RuntimeConf,
) -> Result<Vec<u8>> {
    let mut values = vec![
        ("name", Value::from(network)),
        ("cniVersion", Value::from(version.as_str())),
    ];
    if let Some(prev) = prev_result {
        values.push(("prevResult", prev.clone()));
    }
    let rc = runtime_config_for(plugin, &rt.capability_args);
    if !rc.is_empty() {
        values.push(("runtimeConfig", Value::Object(rc)));
    }
    encode(inject(plugin, values))
}

/// Encode an injected configuration for a plugin's stdin.
pub fn encode(conf: Map<String, Value>) -> Result<Vec<u8>> {
    serde_json::to_vec(&Value::Object(conf))
        .map_err(|e| CniError::internal(format!("encoding plugin configuration: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugin(v: Value) -> PluginConfig {
        PluginConfig::from_value(v).unwrap()
    }

    fn caps() -> Map<String, Value> {
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
               "bandwidth": {"ingressRate": 1000}, "mac": "aa:bb:cc:dd:ee:ff", "ips": null})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn only_declared_capabilities_reach_the_plugin() {
        let p = plugin(json!({"type": "portmap",
            "capabilities": {"portMappings": true, "bandwidth": false, "ips": true, "io": true}}));
        let rc = runtime_config_for(&p, &caps());
        assert_eq!(
            Value::Object(rc),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
                   "ips": null})
        );
        let none = plugin(json!({"type": "bridge"}));
        assert!(runtime_config_for(&none, &caps()).is_empty());
    }

    #[test]
    fn injects_name_version_prev_result_and_keeps_other_keys() {
        let p = plugin(
            json!({"type": "portmap", "name": "own", "cniVersion": "0.3.1",
            "snat": true, "capabilities": {"portMappings": true}}),
        );
        let rt = RuntimeConf {
            capability_args: caps(),
            ..RuntimeConf::default()
        };
        let prev = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.0.0.2/24"}]});
        let out = build_plugin_config("net1", Version::V1_1_0, &p, Some(&prev), &rt).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["name"], "net1");
        assert_eq!(v["cniVersion"], "1.1.0");
        assert_eq!(v["snat"], true);
        assert_eq!(v["prevResult"], prev);
        assert_eq!(
            v["runtimeConfig"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            ["portMappings"]
        );
        assert!(
            v.get("capabilities").is_none(),
            "the runtime removes it: {v}"
        );
    }

    #[test]
    fn capabilities_are_removed_for_every_verb() {
        let p = plugin(json!({"type": "portmap", "snat": true,
            "capabilities": {"portMappings": true, "bandwidth": false}}));
        // ADD, CHECK and DEL, with and without a capability argument that matched.
        for args in [caps(), Map::new()] {
            let rt = RuntimeConf {
                capability_args: args,
                ..RuntimeConf::default()
            };
            let out = build_plugin_config("n", Version::V1_1_0, &p, None, &rt).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert!(v.get("capabilities").is_none(), "{v}");
            assert_eq!((&v["type"], &v["snat"]), (&json!("portmap"), &json!(true)));
        }
        // GC and STATUS build theirs with `inject` directly.
        let gc = inject(&p, vec![("cni.dev/valid-attachments", json!([]))]);
        assert!(!gc.contains_key("capabilities"), "{gc:?}");
        assert_eq!(gc["cni.dev/valid-attachments"], json!([]));
        // The declaration itself is untouched: the runtime still reads it.
        assert_eq!(p.capabilities().collect::<Vec<_>>(), ["portMappings"]);
    }

    #[test]
    fn no_matching_capability_leaves_runtime_config_as_written() {
        let p = plugin(json!({"type": "x", "runtimeConfig": {"static": 1}}));
        let out = build_plugin_config(
            "n",
            Version::V1_0_0,
            &p,
            None,
            &RuntimeConf {
                capability_args: caps(),
                ..RuntimeConf::default()
            },
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["runtimeConfig"], json!({"static": 1}));
        assert!(v.get("prevResult").is_none());
    }
}
