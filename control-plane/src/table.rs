//! `meta.k8s.io/v1` Table output: the columns `kubectl get` prints for each resource
//! (priority 1 columns appear with `-o wide`), computed from the stored JSON.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// One Table column: its definition and how to compute its cell.
#[derive(Debug)]
pub struct Column {
    /// Header, `NAME`, `READY`.
    pub name: &'static str,
    /// OpenAPI type of the cell: `string`, `integer`, `date`.
    pub kind: &'static str,
    /// 0: always printed; 1: only with `-o wide`.
    pub priority: u8,
    /// Computes the cell from the object.
    pub cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, priority: u8, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        kind: "string",
        priority,
        cell,
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn or_none(text: String) -> Value {
    if text.is_empty() {
        Value::from("<none>")
    } else {
        Value::from(text)
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// "5s", "3m2s", "4h", "2d" like kubectl's `HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..=119 => format!("{secs}s"),
        120..=599 => {
            let (m, s) = (secs / 60, secs % 60);
            if s == 0 {
                format!("{m}m")
            } else {
                format!("{m}m{s}s")
            }
        }
        600..=10799 => format!("{}m", secs / 60),
        10800..=172_799 => {
            let (h, m) = (secs / 3600, (secs % 3600) / 60);
            if secs < 28800 && m != 0 {
                format!("{h}h{m}m")
            } else {
                format!("{h}h")
            }
        }
        _ => format!("{}d", secs / 86400),
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn age_of(ts: &Value) -> Value {
    let Some(t) = ts.as_str().and_then(|t| t.parse::<Timestamp>().ok()) else {
        return Value::from("<unknown>");
    };
    let secs = unix_now() - t.as_second();
    Value::from(human_duration(secs))
}

fn age(o: &Value) -> Value {
    age_of(&o["metadata"]["creationTimestamp"])
}

const AGE: Column = Column {
    name: "Age",
    kind: "string",
    priority: 0,
    cell: age,
};

fn containers_of(o: &Value, pod_spec: &Value) -> (Value, Value) {
    let _ = o;
    let cs = pod_spec["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(&c["image"])).collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

fn selector_text(sel: &Value) -> Value {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect())
        .unwrap_or_default();
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let vals: Vec<&str> = e["values"]
                .as_array()
                .map(|a| a.iter().map(s).collect())
                .unwrap_or_default();
            parts.push(match s(&e["operator"]) {
                "In" => format!("{} in ({})", s(&e["key"]), vals.join(",")),
                "NotIn" => format!("{} notin ({})", s(&e["key"]), vals.join(",")),
                "Exists" => s(&e["key"]).to_owned(),
                _ => format!("!{}", s(&e["key"])),
            });
        }
    }
    or_none(parts.join(","))
}

fn map_text(m: &Value) -> Value {
    or_none(
        m.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}={}", s(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default(),
    )
}

/// Namespace columns.
pub static NAMESPACE: &[Column] = &[col("Status", 0, |o| o["status"]["phase"].clone()), AGE];

fn node_status(o: &Value) -> Value {
    let ready = o["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"] == "True");
    let mut st = match ready {
        Some(true) => "Ready".to_owned(),
        Some(false) | None => "NotReady".to_owned(),
    };
    if o["spec"]["unschedulable"] == true {
        st.push_str(",SchedulingDisabled");
    }
    Value::from(st)
}

fn node_address(o: &Value, kind: &str) -> Value {
    or_none(
        o["status"]["addresses"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == kind))
            .map(|x| s(&x["address"]).to_owned())
            .unwrap_or_default(),
    )
}

/// Node columns.
pub static NODE: &[Column] = &[
    col("Status", 0, node_status),
    col("Roles", 0, |o| {
        let roles: Vec<&str> = o["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                    .collect()
            })
            .unwrap_or_default();
        or_none(roles.join(","))
    }),
    AGE,
    col("Version", 0, |o| {
        o["status"]["nodeInfo"]["kubeletVersion"].clone()
    }),
    col("Internal-IP", 1, |o| node_address(o, "InternalIP")),
    col("External-IP", 1, |o| node_address(o, "ExternalIP")),
    col("OS-Image", 1, |o| {
        o["status"]["nodeInfo"]["osImage"].clone()
    }),
    col("Kernel-Version", 1, |o| {
        o["status"]["nodeInfo"]["kernelVersion"].clone()
    }),
    col("Container-Runtime", 1, |o| {
        o["status"]["nodeInfo"]["containerRuntimeVersion"].clone()
    }),
];

fn pod_status(o: &Value) -> Value {
    if !o["metadata"]["deletionTimestamp"].is_null() {
        return Value::from("Terminating");
    }
    if let Some(r) = o["status"]["reason"].as_str() {
        return Value::from(r);
    }
    let statuses = o["status"]["containerStatuses"].as_array();
    if let Some(cs) = statuses {
        for c in cs {
            if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
                return Value::from(r);
            }
            if let Some(r) = c["state"]["terminated"]["reason"].as_str() {
                return Value::from(r);
            }
        }
    }
    let phase = s(&o["status"]["phase"]);
    Value::from(if phase.is_empty() { "Pending" } else { phase })
}

/// Pod columns.
pub static POD: &[Column] = &[
    col("Ready", 0, |o| {
        let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
        let ready = o["status"]["containerStatuses"]
            .as_array()
            .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
        Value::from(format!("{ready}/{total}"))
    }),
    col("Status", 0, pod_status),
    Column {
        name: "Restarts",
        kind: "integer",
        priority: 0,
        cell: |o| {
            Value::from(o["status"]["containerStatuses"].as_array().map_or(0, |cs| {
                cs.iter().map(|c| int(&c["restartCount"])).sum::<i64>()
            }))
        },
    },
    AGE,
    col("IP", 1, |o| or_none(s(&o["status"]["podIP"]).to_owned())),
    col("Node", 1, |o| or_none(s(&o["spec"]["nodeName"]).to_owned())),
    col("Nominated Node", 1, |o| {
        or_none(s(&o["status"]["nominatedNodeName"]).to_owned())
    }),
    col("Readiness Gates", 1, |o| {
        or_none(
            o["spec"]["readinessGates"]
                .as_array()
                .map(|g| format!("0/{}", g.len()))
                .unwrap_or_default(),
        )
    }),
];

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let proto = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(np) => format!("{}:{np}/{proto}", int(&p["port"])),
                        None => format!("{}/{proto}", int(&p["port"])),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    or_none(ports.join(","))
}

fn service_external(o: &Value) -> Value {
    let mut ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| s(&i["ip"]).to_owned())
                .filter(|i| !i.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if let Some(ext) = o["spec"]["externalIPs"].as_array() {
        ips.extend(ext.iter().map(|i| s(i).to_owned()));
    }
    if ips.is_empty() && o["spec"]["type"] == "LoadBalancer" {
        return Value::from("<pending>");
    }
    if o["spec"]["type"] == "ExternalName" {
        return o["spec"]["externalName"].clone();
    }
    or_none(ips.join(","))
}

/// Service columns.
pub static SERVICE: &[Column] = &[
    col("Type", 0, |o| o["spec"]["type"].clone()),
    col("Cluster-IP", 0, |o| {
        or_none(s(&o["spec"]["clusterIP"]).to_owned())
    }),
    col("External-IP", 0, service_external),
    col("Port(s)", 0, service_ports),
    AGE,
    col("Selector", 1, |o| map_text(&o["spec"]["selector"])),
];

/// Endpoints columns.
pub static ENDPOINTS: &[Column] = &[
    col("Endpoints", 0, |o| {
        let mut eps = Vec::new();
        for sub in o["subsets"].as_array().cloned().unwrap_or_default() {
            let ports: Vec<i64> = sub["ports"]
                .as_array()
                .map(|p| p.iter().map(|p| int(&p["port"])).collect())
                .unwrap_or_default();
            for a in sub["addresses"].as_array().cloned().unwrap_or_default() {
                if ports.is_empty() {
                    eps.push(s(&a["ip"]).to_owned());
                }
                for p in &ports {
                    eps.push(format!("{}:{p}", s(&a["ip"])));
                }
            }
        }
        or_none(eps.join(","))
    }),
    AGE,
];

fn count_keys(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// ConfigMap columns.
pub static CONFIGMAP: &[Column] = &[
    Column {
        name: "Data",
        kind: "integer",
        priority: 0,
        cell: |o| Value::from(count_keys(&o["data"]) + count_keys(&o["binaryData"])),
    },
    AGE,
];

/// Secret columns.
pub static SECRET: &[Column] = &[
    col("Type", 0, |o| {
        Value::from(o["type"].as_str().unwrap_or("Opaque"))
    }),
    Column {
        name: "Data",
        kind: "integer",
        priority: 0,
        cell: |o| Value::from(count_keys(&o["data"])),
    },
    AGE,
];

/// Event columns.
pub static EVENT: &[Column] = &[
    col("Last Seen", 0, |o| age_of(&o["lastTimestamp"])),
    col("Type", 0, |o| o["type"].clone()),
    col("Reason", 0, |o| o["reason"].clone()),
    col("Object", 0, |o| {
        let r = &o["involvedObject"];
        Value::from(format!(
            "{}/{}",
            s(&r["kind"]).to_lowercase(),
            s(&r["name"])
        ))
    }),
    col("Message", 0, |o| o["message"].clone()),
];

fn status_int(o: &Value, field: &str) -> Value {
    Value::from(int(&o["status"][field]))
}

/// Deployment columns.
pub static DEPLOYMENT: &[Column] = &[
    col("Ready", 0, |o| {
        Value::from(format!(
            "{}/{}",
            int(&o["status"]["readyReplicas"]),
            o["spec"]["replicas"].as_i64().unwrap_or(1)
        ))
    }),
    Column {
        name: "Up-to-date",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "updatedReplicas"),
    },
    Column {
        name: "Available",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "availableReplicas"),
    },
    AGE,
    col("Containers", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).0
    }),
    col("Images", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).1
    }),
    col("Selector", 1, |o| selector_text(&o["spec"]["selector"])),
];

/// ReplicaSet columns.
pub static REPLICASET: &[Column] = &[
    Column {
        name: "Desired",
        kind: "integer",
        priority: 0,
        cell: |o| Value::from(o["spec"]["replicas"].as_i64().unwrap_or(1)),
    },
    Column {
        name: "Current",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "replicas"),
    },
    Column {
        name: "Ready",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "readyReplicas"),
    },
    AGE,
    col("Containers", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).0
    }),
    col("Images", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).1
    }),
    col("Selector", 1, |o| selector_text(&o["spec"]["selector"])),
];

/// DaemonSet columns.
pub static DAEMONSET: &[Column] = &[
    Column {
        name: "Desired",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "desiredNumberScheduled"),
    },
    Column {
        name: "Current",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "currentNumberScheduled"),
    },
    Column {
        name: "Ready",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "numberReady"),
    },
    Column {
        name: "Up-to-date",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "updatedNumberScheduled"),
    },
    Column {
        name: "Available",
        kind: "integer",
        priority: 0,
        cell: |o| status_int(o, "numberAvailable"),
    },
    col("Node Selector", 0, |o| {
        map_text(&o["spec"]["template"]["spec"]["nodeSelector"])
    }),
    AGE,
    col("Containers", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).0
    }),
    col("Images", 1, |o| {
        containers_of(o, &o["spec"]["template"]["spec"]).1
    }),
    col("Selector", 1, |o| selector_text(&o["spec"]["selector"])),
];

/// EndpointSlice columns.
pub static ENDPOINTSLICE: &[Column] = &[
    col("AddressType", 0, |o| o["addressType"].clone()),
    col("Ports", 0, |o| {
        let ports: Vec<String> = o["ports"]
            .as_array()
            .map(|p| p.iter().map(|p| int(&p["port"]).to_string()).collect())
            .unwrap_or_default();
        or_none(ports.join(","))
    }),
    col("Endpoints", 0, |o| {
        let addrs: Vec<String> = o["endpoints"]
            .as_array()
            .map(|e| {
                e.iter()
                    .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                    .map(|a| s(&a).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        or_none(addrs.join(","))
    }),
    AGE,
];

/// Lease columns.
pub static LEASE: &[Column] = &[
    col("Holder", 0, |o| o["spec"]["holderIdentity"].clone()),
    AGE,
];

/// The column definitions of a Table for these columns (NAME first).
pub fn definitions(columns: &[Column]) -> Value {
    let mut defs = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    for c in columns {
        defs.push(json!({
            "name": c.name, "type": c.kind, "format": "", "priority": c.priority,
            "description": c.name,
        }));
    }
    Value::Array(defs)
}

/// One Table row for an object; `include_object` is `None`, `Metadata` or `Object`.
pub fn row(columns: &[Column], obj: &Value, include_object: &str) -> Value {
    let mut cells = vec![obj["metadata"]["name"].clone()];
    for c in columns {
        let v = (c.cell)(obj);
        cells.push(if v.is_null() { Value::from("") } else { v });
    }
    let object = match include_object {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        }),
    };
    json!({"cells": cells, "object": object})
}

/// A whole Table.
pub fn table(
    columns: &[Column],
    objects: &[Value],
    rv: &str,
    cont: Option<&str>,
    include_object: &str,
    headers: bool,
) -> Value {
    let mut meta = json!({"resourceVersion": rv});
    if let Some(c) = cont {
        meta["continue"] = Value::from(c);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": meta,
        "columnDefinitions": if headers { definitions(columns) } else { json!([]) },
        "rows": objects.iter().map(|o| row(columns, o, include_object)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_wide_columns_show_ip_and_node() {
        let pod = json!({
            "metadata": {"name": "web-1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"nodeName": "node1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                       "containerStatuses": [{"ready": true, "restartCount": 2}, {"ready": false, "restartCount": 1}]},
        });
        let r = row(POD, &pod, "None");
        let cells = r["cells"].as_array().unwrap();
        assert_eq!(cells[0], "web-1");
        assert_eq!(cells[1], "1/2");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], 3);
        assert_eq!(cells[5], "10.244.1.5");
        assert_eq!(cells[6], "node1");
        let defs = definitions(POD);
        assert_eq!(defs[5]["name"], "IP");
        assert_eq!(defs[5]["priority"], 1);
    }

    #[test]
    fn service_ports_show_node_ports() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(service_ports(&svc), "80:30080/TCP,53/UDP");
        assert_eq!(service_external(&svc), "<none>");
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3 * 86400), "3d");
    }
}
