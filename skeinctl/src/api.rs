//! Reading the cluster's API from inside its control namespace (no kubeconfig, no relay):
//! plain HTTP GETs of lists, and the few fields `up` and `status` show.

use anyhow::{Context, bail};
use serde_json::Value;
use skein_testbed::Host;

use crate::layout;

/// GET `path` from the API server and parse the JSON body.
pub fn get_json(control: &Host, path: &str) -> anyhow::Result<Value> {
    let (status, body) = skein_testbed::http_get(control, layout::api_addr(), path)?;
    if status != 200 {
        bail!("GET {path}: HTTP {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("GET {path}: body is not JSON"))
}

/// POSTs `obj` to the collection at `path` in the API server; an object that already
/// exists (409) counts as created.
pub fn create(control: &Host, path: &str, obj: &Value) -> anyhow::Result<()> {
    let (status, body) = post_json(control, path, obj)?;
    match status {
        200 | 201 | 202 | 409 => Ok(()),
        _ => bail!("POST {path}: HTTP {status}: {}", body.trim()),
    }
}

/// A minimal HTTP/1.0 POST of JSON from inside the control namespace: (status, body).
fn post_json(control: &Host, path: &str, obj: &Value) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let addr = layout::api_addr();
    let body = obj.to_string();
    let mut s = control
        .connect_tcp(addr, std::time::Duration::from_secs(2))
        .with_context(|| format!("connect to the API server {addr}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .with_context(|| format!("POST {path}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("POST {path}: read the answer"))?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("POST {path}: no HTTP status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// Whether a Node object has condition Ready=True.
pub fn node_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// One line per Node: name, Ready, InternalIP, podCIDR.
pub fn node_lines(list: &Value) -> Vec<String> {
    items(list)
        .map(|n| {
            let ip = n["status"]["addresses"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["type"] == "InternalIP"))
                .and_then(|x| x["address"].as_str())
                .unwrap_or("-");
            format!(
                "{:<12} {:<9} {:<16} {}",
                n["metadata"]["name"].as_str().unwrap_or("?"),
                if node_ready(n) { "Ready" } else { "NotReady" },
                ip,
                n["spec"]["podCIDR"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// One line per Service: namespace/name, type, ClusterIP, ports.
pub fn service_lines(list: &Value) -> Vec<String> {
    items(list)
        .map(|s| {
            let ports: Vec<String> = s["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let mut t = format!(
                                "{}/{}",
                                p["port"].as_u64().unwrap_or(0),
                                p["protocol"].as_str().unwrap_or("TCP")
                            );
                            if let Some(np) = p["nodePort"].as_u64() {
                                t = format!("{t}:{np}");
                            }
                            t
                        })
                        .collect()
                })
                .unwrap_or_default();
            format!(
                "{:<28} {:<12} {:<16} {}",
                format!(
                    "{}/{}",
                    s["metadata"]["namespace"].as_str().unwrap_or("?"),
                    s["metadata"]["name"].as_str().unwrap_or("?")
                ),
                s["spec"]["type"].as_str().unwrap_or("ClusterIP"),
                s["spec"]["clusterIP"].as_str().unwrap_or("-"),
                ports.join(",")
            )
        })
        .collect()
}

fn items(list: &Value) -> impl Iterator<Item = &Value> {
    list["items"].as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines_show_readiness_ip_and_cidr() {
        let list = serde_json::json!({"items": [
            {"metadata": {"name": "node1"}, "spec": {"podCIDR": "10.244.1.0/24"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}],
                        "addresses": [{"type": "InternalIP", "address": "198.51.100.11"}]}},
            {"metadata": {"name": "node2"}, "spec": {},
             "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}
        ]});
        let lines = node_lines(&list);
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("node1") && lines[0].contains(" Ready "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("198.51.100.11") && lines[0].ends_with("10.244.1.0/24"));
        assert!(lines[1].contains("NotReady"), "{}", lines[1]);
        assert!(node_ready(&list["items"][0]) && !node_ready(&list["items"][1]));
    }

    #[test]
    fn service_lines_show_type_ip_and_ports() {
        let list = serde_json::json!({"items": [
            {"metadata": {"namespace": "default", "name": "web"},
             "spec": {"type": "NodePort", "clusterIP": "10.96.0.20",
                      "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}}
        ]});
        let l = &service_lines(&list)[0];
        assert!(l.starts_with("default/web"), "{l}");
        assert!(
            l.contains("NodePort") && l.contains("10.96.0.20") && l.ends_with("80/TCP:30080"),
            "{l}"
        );
    }
}
