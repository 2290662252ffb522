//! The result cache, in libcni's layout and format so that operators' tools recognise
//! it: `<cache>/results/<network>-<containerID>-<ifname>` holding
//! `{"kind":"cniCacheV1","containerId","ifName","networkName","netns","cniArgs",
//! "capabilityArgs","config":<base64 of the list>,"result"}`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::NetworkList;
use super::{Attachment, show};
use crate::error::{Result, io_err};

/// A cached attachment.
#[derive(Debug, Clone)]
pub struct CachedAttachment {
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_IFNAME.
    pub ifname: String,
    /// The network name.
    pub network_name: String,
    /// CNI_ARGS given at ADD.
    pub args: Vec<(String, String)>,
    /// Capability args given at ADD.
    pub capability_args: Map<String, Value>,
    /// The network list used at ADD (for DEL after a config change).
    pub network: Option<NetworkList>,
    /// The final ADD result.
    pub result: Value,
}

fn path(cache_dir: &Path, net: &str, id: &str, ifname: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{net}-{id}-{ifname}"))
}

/// Writes the cache entry for an attachment (atomically: temp file then rename).
pub(crate) fn write(
    cache_dir: &Path,
    net: &NetworkList,
    att: &Attachment,
    result: &Value,
) -> Result<()> {
    let p = path(cache_dir, &net.name, &att.container_id, &att.ifname);
    let raw = serde_json::to_vec(&net.raw).unwrap_or_default();
    let entry = json!({
        "kind": "cniCacheV1",
        "containerId": att.container_id,
        "ifName": att.ifname,
        "networkName": net.name,
        "netns": show(&att.netns),
        "cniArgs": att.args.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "capabilityArgs": att.capability_args,
        "config": base64_encode(&raw),
        "result": result,
    });
    crate::state::write_json_atomic(&p, &entry)
}

/// Reads an entry; a missing or unreadable one is `None`.
pub(crate) fn read(
    cache_dir: &Path,
    net: &str,
    id: &str,
    ifname: &str,
) -> Option<CachedAttachment> {
    parse_file(&path(cache_dir, net, id, ifname))
}

fn parse_file(p: &Path) -> Option<CachedAttachment> {
    let v: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    if v.get("kind").and_then(Value::as_str) != Some("cniCacheV1") {
        return None;
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let args = v
        .get("cniArgs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|kv| {
                    Some((
                        kv.get(0)?.as_str()?.to_owned(),
                        kv.get(1)?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let network = s("config")
        .and_then(|b| base64_decode(&b))
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| NetworkList::from_value(v, None).ok());
    Some(CachedAttachment {
        container_id: s("containerId")?,
        ifname: s("ifName")?,
        network_name: s("networkName")?,
        args,
        capability_args: v
            .get("capabilityArgs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        network,
        result: v.get("result").cloned().unwrap_or(Value::Null),
    })
}

/// Removes an entry; missing is fine.
pub(crate) fn remove(cache_dir: &Path, net: &str, id: &str, ifname: &str) -> Result<()> {
    let p = path(cache_dir, net, id, ifname);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove cni cache", p)(e)),
    }
}

/// Every cached attachment of network `net`.
pub(crate) fn list(cache_dir: &Path, net: &str) -> Vec<CachedAttachment> {
    let Ok(rd) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<CachedAttachment> = rd
        .flatten()
        .filter_map(|e| parse_file(&e.path()))
        .filter(|c| c.network_name == net)
        .collect();
    out.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (Go's encoding of a JSON []byte).
fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_matches_the_standard() {
        assert_eq!(base64_encode(b"hello"), "aGVsbG8=");
        assert_eq!(base64_encode(b"hi!"), "aGkh");
        assert_eq!(base64_encode(b"h"), "aA==");
        for s in [&b""[..], b"a", b"ab", b"abc", b"{\"name\":\"x\"}"] {
            assert_eq!(base64_decode(&base64_encode(s)).unwrap(), s);
        }
    }

    #[test]
    fn entries_round_trip_and_list_by_network() {
        let d = tempfile::tempdir().unwrap();
        let net = NetworkList::from_value(
            json!({"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}),
            None,
        )
        .unwrap();
        let att = Attachment {
            container_id: "abc".into(),
            netns: "/run/x".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            capability_args: Map::new(),
        };
        write(
            d.path(),
            &net,
            &att,
            &json!({"ips":[{"address":"10.0.0.2/24"}]}),
        )
        .unwrap();
        assert!(d.path().join("results/k8s-abc-eth0").is_file());
        let c = read(d.path(), "k8s", "abc", "eth0").unwrap();
        assert_eq!(c.network.as_ref().unwrap().name, "k8s");
        assert_eq!(c.args, att.args);
        assert_eq!(c.result["ips"][0]["address"], "10.0.0.2/24");
        assert_eq!(list(d.path(), "k8s").len(), 1);
        assert!(list(d.path(), "other").is_empty());
        remove(d.path(), "k8s", "abc", "eth0").unwrap();
        remove(d.path(), "k8s", "abc", "eth0").unwrap();
        assert!(read(d.path(), "k8s", "abc", "eth0").is_none());
    }
}
