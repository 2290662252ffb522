//! Input checks that do not depend on storage: object names, labels, annotations, and
//! unknown fields found by comparing the client's JSON with its typed round trip.

use serde_json::Value;

use crate::error::Cause;
use crate::registry::NameRule;

/// Checks a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters).
pub fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (at most 63 characters)"
        ))
    }
}

/// Checks a DNS-1123 subdomain (labels joined by `.`, at most 253 characters).
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {s:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (at most 253 characters)"
        ))
    }
}

/// Checks an object name under its resource's rule.
pub fn name(rule: NameRule, s: &str) -> Result<(), String> {
    match rule {
        NameRule::Label => dns_label(s),
        NameRule::Subdomain => dns_subdomain(s),
    }
}

fn qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label or annotation key (`[prefix/]name`).
pub fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        dns_subdomain(p).map_err(|_| {
            format!("Invalid value: {key:?}: prefix part must be a DNS-1123 subdomain")
        })?;
    }
    if qualified_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        ))
    }
}

/// Checks a label value (empty, or like a name part).
pub fn label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || qualified_name_part(v) {
        Ok(())
    } else {
        Err(format!(
            "Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63 characters)"
        ))
    }
}

/// Checks `metadata.labels` and `metadata.annotations` (a map of strings).
pub fn metadata(meta: &Value, causes: &mut Vec<Cause>) {
    if let Some(labels) = meta["labels"].as_object() {
        for (k, v) in labels {
            if let Err(e) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.labels", e));
            }
            if let Err(e) = label_value(v.as_str().unwrap_or("")) {
                causes.push(Cause::invalid(format!("metadata.labels[{k}]"), e));
            }
        }
    }
    if let Some(ann) = meta["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in ann {
            if let Err(e) = qualified_name(k) {
                causes.push(Cause::invalid("metadata.annotations", e));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            causes.push(Cause::invalid(
                "metadata.annotations",
                format!("Too long: must have at most 262144 bytes, got {total}"),
            ));
        }
    }
}

/// Paths (`spec.foo`, `spec.containers[0].bogus`) present in `input` but absent from its
/// typed round trip `typed`: the fields the Kubernetes type does not have.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, String::new(), &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk(v, tv, p, out),
                    None if v.is_null() => {}
                    // Empty objects and lists of optional fields are dropped by the round
                    // trip without being unknown.
                    None if v.as_object().is_some_and(|m| m.is_empty())
                        || v.as_array().is_some_and(|a| a.is_empty()) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t).enumerate() {
                walk(iv, tv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_dns_rules() {
        assert!(dns_label("web-1").is_ok());
        assert!(dns_label("Web").is_err());
        assert!(dns_label("-a").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("a.b-c.d").is_ok());
        assert!(dns_subdomain("a..b").is_err());
        assert!(dns_subdomain("a_b").is_err());
    }

    #[test]
    fn label_keys_and_values() {
        assert!(qualified_name("app").is_ok());
        assert!(qualified_name("app.kubernetes.io/name").is_ok());
        assert!(qualified_name("bad key").is_err());
        assert!(qualified_name("UPPER.example/x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_x").is_ok());
        assert!(label_value("-x").is_err());
        let mut causes = Vec::new();
        metadata(
            &json!({"labels": {"ok": "fine", "a b": "x", "c": "!"}}),
            &mut causes,
        );
        assert_eq!(causes.len(), 2);
    }

    #[test]
    fn unknown_fields_are_found_by_path() {
        let input = json!({"spec": {"replicas": 1, "bogus": true, "template": {"spec": {"containers": [{"name": "a", "imagee": "x"}]}}}, "extra": null});
        let typed =
            json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "a"}]}}}});
        assert_eq!(
            unknown_fields(&input, &typed),
            vec!["spec.bogus", "spec.template.spec.containers[0].imagee"]
        );
    }
}
