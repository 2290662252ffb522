//! Label selectors (metav1.LabelSelector and Service selectors) matched against labels.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `sel`. An empty selector matches everything, as in Kubernetes;
/// an unknown operator matches nothing.
pub fn matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &sel.match_labels
        && !ml.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let v = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            _ => false,
        }
    })
}

/// A Service's selector (a plain map): every pair must match; `None` or empty selects
/// nothing (a Service without a selector has hand-made endpoints).
pub fn map_matches(
    sel: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    match sel {
        Some(sel) if !sel.is_empty() => {
            let empty = BTreeMap::new();
            let labels = labels.unwrap_or(&empty);
            sel.iter().all(|(k, v)| labels.get(k) == Some(v))
        }
        _ => false,
    }
}
