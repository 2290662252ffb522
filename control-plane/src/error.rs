//! API errors, rendered as `meta.k8s.io/v1` `Status` objects with the HTTP code and reason
//! that kubectl and kube-rs expect.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One entry of `Status.details.causes`: which field is wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`, ...
    pub reason: &'static str,
    /// The field path, `metadata.name`, `spec.ports[0].port`.
    pub field: String,
    /// A human-readable message.
    pub message: String,
}

impl Cause {
    /// A `FieldValueInvalid` cause.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: message.into(),
        }
    }

    /// A `FieldValueRequired` cause.
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }
}

/// An error the API returns to its client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed request.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("Unauthorized")]
    Unauthorized,
    /// 403.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// group-qualified resource, `pods`, `deployments.apps`.
        resource: String,
        /// object name.
        name: String,
    },
    /// 404 for an unknown path.
    #[error("the server could not find the requested resource")]
    NoSuchPath,
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 AlreadyExists.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// group-qualified resource.
        resource: String,
        /// object name.
        name: String,
    },
    /// 409 Conflict.
    #[error("{0}")]
    Conflict(String),
    /// 410 Gone / Expired.
    #[error("{0}")]
    Gone(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 Invalid, with causes.
    #[error("{} \"{name}\" is invalid: {}", qualified(kind, group), render_causes(.causes))]
    Invalid {
        /// Kind of the object.
        kind: String,
        /// API group (empty for core).
        group: String,
        /// Object name.
        name: String,
        /// What is wrong.
        causes: Vec<Cause>,
    },
    /// 500.
    #[error("{0}")]
    Internal(String),
    /// 501.
    #[error("{0}")]
    NotImplemented(String),
    /// 503.
    #[error("{0}")]
    Unavailable(String),
}

fn qualified(kind: &str, group: &str) -> String {
    if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    }
}

fn render_causes(causes: &[Cause]) -> String {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect::<Vec<_>>()
        .join(", ")
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } | ApiError::NoSuchPath => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AlreadyExists { .. } | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoSuchPath => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict(_) => "Conflict",
            ApiError::Gone(_) => "Expired",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::Internal(_) => "InternalError",
            ApiError::NotImplemented(_) => "NotImplemented",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let details = match self {
            ApiError::NotFound { resource, name } | ApiError::AlreadyExists { resource, name } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason, "message": c.message, "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        if let Some(d) = details {
            s["details"] = d;
        }
        s
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_) | ApiError::Unavailable(_)) {
            tracing::warn!(error = %self, "request failed");
        }
        let body = serde_json::to_vec(&self.status()).unwrap_or_default();
        (
            self.code(),
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<etcd_client::Error> for ApiError {
    fn from(e: etcd_client::Error) -> Self {
        let msg = e.to_string();
        if msg.contains("required revision has been compacted") {
            ApiError::Gone(format!("too old resource version: {msg}"))
        } else {
            ApiError::Unavailable(format!("etcd: {msg}"))
        }
    }
}

/// Result alias for API operations.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_status_names_the_object() {
        let e = ApiError::NotFound {
            resource: "deployments.apps".into(),
            name: "web".into(),
        };
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["group"], "apps");
    }

    #[test]
    fn invalid_status_lists_causes() {
        let e = ApiError::Invalid {
            kind: "Service".into(),
            group: "".into(),
            name: "s".into(),
            causes: vec![Cause::invalid("spec.ports[0].port", "must be 1-65535")],
        };
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.ports[0].port");
        assert!(s["message"].as_str().unwrap().contains("must be 1-65535"));
    }
}
