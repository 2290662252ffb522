//! The Kubernetes protobuf envelope, decoded for the few kinds kubectl's generator
//! subcommands send as protobuf (`kubectl create namespace|configmap|secret`). Other
//! kinds in protobuf get a 415 that says to send JSON or YAML.
//!
//! Wire: `k8s\0` + runtime.Unknown{1: typeMeta{1: apiVersion, 2: kind}, 2: raw, ...};
//! `raw` is the typed message (field numbers from k8s.io/api generated.proto).

use serde_json::{Map, Value, json};

/// A protobuf field value.
#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (num, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = varint(buf, &mut pos)? as usize;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                out.push((num, Field::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string field is not UTF-8".to_owned())
}

fn base64(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// A map<string, string|bytes> entry list into a JSON object.
fn map_entry(b: &[u8], m: &mut Map<String, Value>, bytes: bool) -> Result<(), String> {
    let (mut k, mut v) = (String::new(), Value::from(""));
    for (n, f) in fields(b)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => k = text(x)?,
                2 => v = Value::from(if bytes { base64(x) } else { text(x)? }),
                _ => {}
            }
        }
    }
    m.insert(k, v);
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(b)? {
        let Field::Bytes(x) = f else { continue };
        // proto2 sends unset strings as empty ones; JSON would omit them.
        if x.is_empty() {
            continue;
        }
        match n {
            1 => drop(m.insert("name".into(), text(x)?.into())),
            2 => drop(m.insert("generateName".into(), text(x)?.into())),
            3 => drop(m.insert("namespace".into(), text(x)?.into())),
            11 => map_entry(x, &mut labels, false)?,
            12 => map_entry(x, &mut annotations, false)?,
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or("the protobuf body lacks the k8s envelope")?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    if let Field::Bytes(x) = tf {
                        match tn {
                            1 => api_version = text(x)?,
                            2 => kind = text(x)?,
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let (mut data, mut binary) = (Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind.as_str(), n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("ConfigMap", 2, Field::Bytes(x)) => map_entry(x, &mut data, false)?,
            ("ConfigMap", 3, Field::Bytes(x)) => map_entry(x, &mut binary, true)?,
            ("ConfigMap", 4, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("Secret", 2, Field::Bytes(x)) => map_entry(x, &mut data, true)?,
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = text(x)?.into(),
            ("Secret", 4, Field::Bytes(x)) => map_entry(x, &mut binary, false)?,
            ("Secret", 5, Field::Varint(v)) => obj["immutable"] = json!(v != 0),
            ("Namespace" | "ConfigMap" | "Secret", _, _) => {}
            (k, _, _) => {
                return Err(format!(
                    "protobuf bodies are decoded only for Namespace, ConfigMap and Secret, not {k}; send JSON or YAML"
                ));
            }
        }
    }
    if !data.is_empty() {
        obj["data"] = Value::Object(data);
    }
    if !binary.is_empty() {
        let key = if kind == "Secret" {
            "stringData"
        } else {
            "binaryData"
        };
        obj[key] = Value::Object(binary);
    }
    if !matches!(kind.as_str(), "Namespace" | "ConfigMap" | "Secret") {
        return Err(format!(
            "protobuf bodies are decoded only for Namespace, ConfigMap and Secret, not {kind:?}; send JSON or YAML"
        ));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(num: u64, b: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, b.len() as u8];
        v.extend_from_slice(b);
        v
    }

    #[test]
    fn decodes_a_configmap_envelope() {
        let meta = [
            ld(1, b"settings"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            ld(2, &[ld(1, b"color"), ld(2, b"blue")].concat()),
        ]
        .concat();
        let unknown = [
            ld(1, &[ld(1, b"v1"), ld(2, b"ConfigMap")].concat()),
            ld(2, &raw),
        ]
        .concat();
        let body = [b"k8s\0".to_vec(), unknown].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(obj["kind"], "ConfigMap");
        assert_eq!(obj["metadata"]["name"], "settings");
        assert_eq!(obj["metadata"]["labels"]["app"], "web");
        assert_eq!(obj["data"]["color"], "blue");
        assert!(decode(b"k8s\0\x0a\xff").is_err());
        assert!(decode(b"nope").is_err());
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b"hello"), "aGVsbG8=");
        assert_eq!(base64(b"hi!"), "aGkh");
    }
}
