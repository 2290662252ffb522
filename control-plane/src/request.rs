//! Parsing a request: which resource and object the path names, the query options, the
//! body (JSON or YAML) and the wanted output (plain JSON or a Table).

use std::collections::HashMap;

use axum::http::{HeaderMap, Uri, header};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::registry::{self, Resource};

/// The most a request body may hold (like kube-apiserver's 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource.
    pub res: &'static Resource,
    /// Namespace from the path (`None`: cluster-scoped, or all namespaces).
    pub namespace: Option<String>,
    /// Object name (`None`: the collection).
    pub name: Option<String>,
    /// Subresource.
    pub sub: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<group>/<version>/...` resource paths. `None` when
/// the path is not a resource path.
pub fn parse_path(path: &str) -> ApiResult<Option<Target>> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let find = |plural: &str| registry::find(group, version, plural).ok_or(ApiError::NoSuchPath);
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..] if !matches!(*plural, "status" | "finalize") => {
            let res = find(plural)?;
            if !res.namespaced {
                return Err(ApiError::NoSuchPath);
            }
            let (name, sub) = match tail {
                [] => (None, None),
                [n] => (Some(*n), None),
                [n, s] => (Some(*n), Some(*s)),
                _ => return Err(ApiError::NoSuchPath),
            };
            Target {
                res,
                namespace: Some((*ns).to_owned()),
                name: name.map(str::to_owned),
                sub: sub.map(str::to_owned),
            }
        }
        [plural, tail @ ..] => {
            let res = find(plural)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [n] => (Some(*n), None),
                [n, s] => (Some(*n), Some(*s)),
                _ => return Err(ApiError::NoSuchPath),
            };
            if res.namespaced && name.is_some() {
                return Err(ApiError::NoSuchPath);
            }
            Target {
                res,
                namespace: None,
                name: name.map(str::to_owned),
                sub: sub.map(str::to_owned),
            }
        }
        [] => return Ok(None),
    };
    if let Some(s) = &t.sub
        && !t.res.has_sub(s)
    {
        return Err(ApiError::NoSuchPath);
    }
    Ok(Some(t))
}

/// Query parameters (the last value wins).
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses the query string.
    pub fn parse(uri: &Uri) -> ApiResult<Query> {
        let q = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
            .map_err(|e| ApiError::BadRequest(format!("invalid query string: {e}")))?;
        Ok(Query(q.0.into_iter().collect()))
    }

    /// A parameter.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`true`, `1`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    /// An integer parameter, 400 when malformed.
    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::BadRequest(format!("invalid {k}: {v:?} is not an integer"))
                })
            })
            .transpose()
    }

    /// A resourceVersion parameter: `None` for unset, 400 when not a number.
    pub fn rv(&self, k: &str) -> ApiResult<Option<i64>> {
        self.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest(format!("invalid resource version: {v:?}")))
            })
            .transpose()
    }
}

/// Whether the client asked for a `meta.k8s.io/v1` Table.
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .next()
                .is_some_and(|first| first.contains("as=Table"))
        })
}

/// The body's media type, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML body into one object.
pub fn decode_body(body: &[u8], media: &str) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    let v: Value = if media.contains("yaml") {
        serde_yaml::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
    } else if media.contains("json") || media.is_empty() {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding JSON: {e}")))?
    } else if media.contains("protobuf") {
        crate::protobuf::decode(body).map_err(|e| match e {
            crate::protobuf::DecodeError::Unsupported(m) => {
                ApiError::UnsupportedMediaType(format!("the body is protobuf: {m}"))
            }
            crate::protobuf::DecodeError::Malformed(m) => {
                ApiError::BadRequest(format!("error decoding protobuf: {m}"))
            }
        })?
    } else {
        return Err(ApiError::UnsupportedMediaType(format!(
            "the body content type must be JSON or YAML, not {media:?}"
        )));
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_resources() {
        let t = parse_path("/api/v1/namespaces/default/pods/web/status")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = parse_path("/apis/apps/v1/deployments").unwrap().unwrap();
        assert_eq!(
            (t.res.plural, t.namespace, t.name),
            ("deployments", None, None)
        );
        let t = parse_path("/api/v1/namespaces/kube-system")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_path("/api/v1/namespaces/x/finalize")
            .unwrap()
            .unwrap();
        assert_eq!(
            (t.res.plural, t.sub.as_deref()),
            ("namespaces", Some("finalize"))
        );
        let t = parse_path("/api/v1/nodes/n1/status").unwrap().unwrap();
        assert_eq!(t.sub.as_deref(), Some("status"));
        assert!(parse_path("/api/v1/widgets").is_err());
        assert!(parse_path("/api/v1/namespaces/a/pods/p/attach").is_err());
        let t = parse_path("/api/v1/namespaces/a/pods/p/exec")
            .unwrap()
            .unwrap();
        assert_eq!(t.sub.as_deref(), Some("exec"));
        assert!(
            parse_path("/api/v1/pods/p").is_err(),
            "namespaced object needs its namespace"
        );
        assert!(parse_path("/api/v1").unwrap().is_none());
    }

    #[test]
    fn bodies_decode_from_json_and_yaml() {
        assert_eq!(
            decode_body(b"a: 1", "application/apply-patch+yaml").unwrap()["a"],
            1
        );
        assert!(matches!(
            decode_body(b"{bad", "application/json"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            decode_body(b"x", "text/plain"),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
