//! Network configuration from the CNI config dir, chosen as libcni/containerd choose it:
//! the files ending in `.conflist`, `.conf` or `.json`, sorted by name, first valid one
//! wins; a single-plugin `.conf` becomes a list of one.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::show;
use crate::error::{Error, Result};

/// A network configuration list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkList {
    /// The network name (`name`).
    pub name: String,
    /// `cniVersion` of the list, given to every plugin.
    pub cni_version: String,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC`.
    pub disable_gc: bool,
    /// The plugin objects, in order.
    pub plugins: Vec<Map<String, Value>>,
    /// The list as JSON (what is cached for DEL).
    pub raw: Value,
    /// The file it came from.
    pub source: Option<PathBuf>,
}

impl NetworkList {
    /// Builds a list from parsed JSON: a conflist (`plugins`) or a single plugin (`type`).
    pub fn from_value(v: Value, source: Option<PathBuf>) -> std::result::Result<Self, String> {
        let obj = v.as_object().ok_or("not a JSON object")?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("missing \"name\"")?
            .to_owned();
        let cni_version = obj
            .get("cniVersion")
            .and_then(Value::as_str)
            .unwrap_or("0.2.0")
            .to_owned();
        if super::version::parse(&cni_version).is_none() {
            return Err(format!("invalid cniVersion {cni_version:?}"));
        }
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let (plugins, raw) = match obj.get("plugins") {
            Some(list) => {
                let list = list.as_array().ok_or("\"plugins\" is not a list")?;
                let mut plugins = Vec::new();
                for (i, p) in list.iter().enumerate() {
                    let p = p
                        .as_object()
                        .ok_or_else(|| format!("plugin {i} is not an object"))?;
                    if p.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .is_empty()
                    {
                        return Err(format!("plugin {i} has no \"type\""));
                    }
                    plugins.push(p.clone());
                }
                if plugins.is_empty() {
                    return Err("\"plugins\" is empty".into());
                }
                (plugins, v.clone())
            }
            None => {
                if obj
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    return Err("neither \"plugins\" nor \"type\"".into());
                }
                let mut plugin = obj.clone();
                plugin.remove("name");
                plugin.remove("cniVersion");
                let raw = serde_json::json!({
                    "cniVersion": cni_version, "name": name, "plugins": [plugin.clone()]
                });
                (vec![plugin], raw)
            }
        };
        Ok(NetworkList {
            name,
            cni_version,
            disable_check: flag("disableCheck"),
            disable_gc: flag("disableGC"),
            plugins,
            raw,
            source,
        })
    }

    /// The stdin config for one plugin: the plugin object plus the list's `name` and
    /// `cniVersion`, `prevResult` when chaining, and `runtimeConfig` with the capability
    /// arguments the plugin declares in `capabilities`.
    pub fn plugin_config(
        &self,
        plugin: &Map<String, Value>,
        prev: Option<&Value>,
        capability_args: &Map<String, Value>,
    ) -> Value {
        let mut conf = plugin.clone();
        conf.insert("name".into(), Value::String(self.name.clone()));
        conf.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        if let Some(prev) = prev {
            conf.insert("prevResult".into(), prev.clone());
        }
        if let Some(caps) = plugin.get("capabilities").and_then(Value::as_object) {
            let mut rt = Map::new();
            for (cap, on) in caps {
                if on.as_bool() == Some(true)
                    && let Some(arg) = capability_args.get(cap)
                {
                    rt.insert(cap.clone(), arg.clone());
                }
            }
            if !rt.is_empty() {
                conf.insert("runtimeConfig".into(), Value::Object(rt));
            }
        }
        Value::Object(conf)
    }

    /// The plugin types, in order (for logs).
    pub fn types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }
}

/// Loads the network from `dir`: the first file (by name) ending in `.conflist`, `.conf`
/// or `.json` that parses into a valid list. Invalid files are skipped with a warning.
pub fn load_dir(dir: &Path) -> Result<NetworkList> {
    let err = |reason: String| Error::CniConfig {
        dir: dir.to_owned(),
        reason,
    };
    let rd = std::fs::read_dir(dir).map_err(|e| err(format!("read: {e}")))?;
    let mut files: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conflist" | "conf" | "json")
                )
        })
        .collect();
    files.sort();
    let mut skipped = Vec::new();
    for f in files {
        let parsed = std::fs::read(&f)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string()))
            .and_then(|v| NetworkList::from_value(v, Some(f.clone())));
        match parsed {
            Ok(list) => return Ok(list),
            Err(reason) => {
                tracing::warn!(file = %show(&f), %reason, "skipping invalid cni config");
                skipped.push(format!("{}: {reason}", show(&f)));
            }
        }
    }
    Err(err(if skipped.is_empty() {
        "no network configuration (*.conflist, *.conf, *.json)".into()
    } else {
        format!("no valid network configuration ({})", skipped.join("; "))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn single_conf_becomes_a_list_of_one() {
        let l = NetworkList::from_value(
            json!({"cniVersion":"0.4.0","name":"n","type":"bridge","bridge":"cni0"}),
            None,
        )
        .unwrap();
        assert_eq!(l.types(), ["bridge"]);
        assert_eq!(l.raw["plugins"][0]["bridge"], "cni0");
        assert!(l.raw["plugins"][0].get("name").is_none());
    }

    #[test]
    fn plugin_config_carries_name_version_prev_and_declared_capabilities_only() {
        let l = NetworkList::from_value(
            json!({"cniVersion":"1.0.0","name":"k8s","plugins":[
                {"type":"bridge"},
                {"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false}}]}),
            None,
        )
        .unwrap();
        let mut caps = Map::new();
        caps.insert("portMappings".into(), json!([{"hostPort":8080}]));
        caps.insert("bandwidth".into(), json!({"x":1}));
        let prev = json!({"ips":[]});
        let c0 = l.plugin_config(&l.plugins[0], None, &caps);
        assert_eq!(c0["name"], "k8s");
        assert_eq!(c0["cniVersion"], "1.0.0");
        assert!(c0.get("prevResult").is_none());
        assert!(c0.get("runtimeConfig").is_none());
        let c1 = l.plugin_config(&l.plugins[1], Some(&prev), &caps);
        assert_eq!(c1["prevResult"], prev);
        assert_eq!(
            c1["runtimeConfig"],
            json!({"portMappings":[{"hostPort":8080}]})
        );
    }

    #[test]
    fn load_dir_takes_first_valid_file_by_name_and_explains_failures() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("00-broken.conflist"), "{not json").unwrap();
        std::fs::write(
            d.path().join("10-a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        std::fs::write(
            d.path().join("20-b.conf"),
            r#"{"cniVersion":"1.0.0","name":"b","type":"bridge"}"#,
        )
        .unwrap();
        std::fs::write(d.path().join("05-ignored.txt"), "x").unwrap();
        assert_eq!(load_dir(d.path()).unwrap().name, "a");

        let empty = tempfile::tempdir().unwrap();
        let e = load_dir(empty.path()).unwrap_err().to_string();
        assert!(e.contains("no network configuration"), "{e}");

        let bad = tempfile::tempdir().unwrap();
        std::fs::write(
            bad.path().join("a.conflist"),
            r#"{"name":"x","plugins":[]}"#,
        )
        .unwrap();
        let e = load_dir(bad.path()).unwrap_err().to_string();
        assert!(e.contains("\"plugins\" is empty"), "{e}");
    }
}
