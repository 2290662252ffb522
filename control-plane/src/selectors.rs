//! Label and field selectors as `?labelSelector=` and `?fieldSelector=` carry them.
//!
//! Labels: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by `,`.
//! Fields: `metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase` (and a
//! few more per kind) with `=`, `==`, `!=`.

use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// key = value
    Eq(String, String),
    /// key != value
    NotEq(String, String),
    /// key in (values)
    In(String, Vec<String>),
    /// key notin (values)
    NotIn(String, Vec<String>),
    /// key exists
    Exists(String),
    /// key does not exist
    NotExists(String),
}

/// A parsed label selector (all requirements must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 317
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn set_values(rest: &str, term: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            format!("unable to parse requirement {term:?}: expected a (value,...) set")
        })?;
    let vals: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(bad) = vals.iter().find(|v| !valid_value(v)) {
        return Err(format!("invalid label value: {bad:?}"));
    }
    Ok(vals)
}

impl LabelSelector {
    /// Parses the `labelSelector` query value.
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector(reqs));
        }
        for term in split_top_level(s) {
            let t = term.trim();
            if t.is_empty() {
                return Err(format!("unable to parse requirement in {s:?}: empty term"));
            }
            let check = |k: &str| -> Result<String, String> {
                let k = k.trim();
                if valid_key(k) {
                    Ok(k.to_owned())
                } else {
                    Err(format!("invalid label key {k:?} in selector {s:?}"))
                }
            };
            let checkv = |v: &str| -> Result<String, String> {
                let v = v.trim();
                if valid_value(v) {
                    Ok(v.to_owned())
                } else {
                    Err(format!("invalid label value {v:?} in selector {s:?}"))
                }
            };
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement::NotExists(check(k)?)
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement::NotEq(check(k)?, checkv(v)?)
            } else if let Some((k, v)) = t.split_once("==") {
                Requirement::Eq(check(k)?, checkv(v)?)
            } else if let Some((k, v)) = t.split_once('=') {
                Requirement::Eq(check(k)?, checkv(v)?)
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Requirement::NotIn(check(k)?, set_values(rest, t)?)
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Requirement::In(check(k)?, set_values(rest, t)?)
            } else {
                Requirement::Exists(check(t)?)
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Builds a selector from a `metav1.LabelSelector` object (matchLabels and
    /// matchExpressions), as Deployments and ReplicaSets carry it.
    pub fn from_object(sel: &Value) -> Result<LabelSelector, String> {
        let mut reqs = Vec::new();
        if let Some(m) = sel["matchLabels"].as_object() {
            for (k, v) in m {
                reqs.push(Requirement::Eq(
                    k.clone(),
                    v.as_str().unwrap_or("").to_owned(),
                ));
            }
        }
        for e in sel["matchExpressions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let key = e["key"].as_str().unwrap_or("").to_owned();
            let vals: Vec<String> = e["values"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            reqs.push(match e["operator"].as_str().unwrap_or("") {
                "In" => Requirement::In(key, vals),
                "NotIn" => Requirement::NotIn(key, vals),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                op => return Err(format!("{op:?} is not a valid label selector operator")),
            });
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels satisfy the selector.
    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }

    /// The selector as text (`a=b,c in (d)`), as Scale.status.selector carries it.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One field requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// Field path, `spec.nodeName`.
    pub field: String,
    /// Value compared.
    pub value: String,
    /// `!=` instead of `=`.
    pub negate: bool,
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

/// Fields every kind supports.
const COMMON_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Extra selectable fields per kind (beyond metadata.name and metadata.namespace).
pub fn kind_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &[
            "spec.nodeName",
            "status.phase",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        "Node" => &["spec.unschedulable"],
        "Secret" => &["type"],
        "Event" => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        "Namespace" => &["status.phase"],
        "ReplicaSet" => &["status.replicas"],
        "Service" => &["spec.clusterIP", "spec.type"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parses the `fieldSelector` query value for objects of `kind`.
    pub fn parse(s: &str, kind: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for term in s.split(',') {
            let t = term.trim();
            let (field, value, negate) = if let Some((f, v)) = t.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = t.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = t.split_once('=') {
                (f, v, false)
            } else {
                return Err(format!("invalid selector: {s:?}; can't understand {t:?}"));
            };
            let field = field.trim();
            if !COMMON_FIELDS.contains(&field) && !kind_fields(kind).contains(&field) {
                return Err(format!(
                    "field label not supported: {field} (for kind {kind})"
                ));
            }
            reqs.push(FieldRequirement {
                field: field.to_owned(),
                value: value.trim().to_owned(),
                negate,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether an object satisfies the selector. Missing fields compare as "".
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let mut v = obj;
            for part in r.field.split('.') {
                v = &v[part];
            }
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (text == r.value) != r.negate
        })
    }

    /// The value required for `metadata.name`, if the selector pins one.
    pub fn pinned_name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.field == "metadata.name" && !r.negate)
            .map(|r| r.value.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_operators_match_like_kubernetes() {
        let labels = json!({"app": "web", "tier": "front"});
        let ok = |s: &str| LabelSelector::parse(s).unwrap().matches(&labels);
        assert!(ok("app=web"));
        assert!(ok("app==web,tier"));
        assert!(!ok("app!=web"));
        assert!(ok("app in (web, db)"));
        assert!(!ok("app notin (web)"));
        assert!(ok("env notin (prod)"));
        assert!(ok("!env"));
        assert!(!ok("!app"));
        assert!(ok("app in (web),tier in (front,back)"));
        assert!(ok(""));
    }

    #[test]
    fn bad_label_selectors_are_refused() {
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
        assert!(LabelSelector::parse("a=,").is_err());
    }

    #[test]
    fn selector_object_round_trips_to_text() {
        let sel = LabelSelector::from_object(&json!({"matchLabels": {"app": "nginx"}})).unwrap();
        assert_eq!(sel.to_text(), "app=nginx");
        assert!(sel.matches(&json!({"app": "nginx", "x": "y"})));
    }

    #[test]
    fn field_selectors_cover_pod_fields_and_refuse_others() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
                         "spec": {"nodeName": "node1"}, "status": {"phase": "Running"}});
        let fs = FieldSelector::parse("spec.nodeName=node1,status.phase!=Failed", "Pod").unwrap();
        assert!(fs.matches(&pod));
        let fs = FieldSelector::parse("spec.nodeName=", "Pod").unwrap();
        assert!(!fs.matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=x", "ConfigMap").is_err());
        assert_eq!(
            FieldSelector::parse("metadata.name=p", "ConfigMap")
                .unwrap()
                .pinned_name(),
            Some("p")
        );
    }
}
