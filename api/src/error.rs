//! JSON errors: `{"error":{"code":"…","message":"…"}}` with the HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};

/// An API error: status, a stable machine-readable code and a message naming what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// `bad_parameter`, `unauthorized`, `not_found`, `method_not_allowed`, `timeout`,
    /// `too_many_streams`, `internal`.
    pub code: &'static str,
    /// What was wrong (names the parameter).
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status: status.as_u16(),
            code,
            message: message.into(),
        }
    }

    /// 400: the parameter `name` is wrong.
    pub fn bad_parameter(name: &str, why: impl std::fmt::Display) -> Self {
        // Parameter names come from the request: keep them short and printable in the message.
        let name: String = name
            .chars()
            .take(64)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad_parameter",
            format!("{name}: {why}"),
        )
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route answers GET only",
        )
    }

    /// 503: the request took too long.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", message)
    }

    /// 503: too many live stream connections.
    pub fn too_many_streams(limit: usize) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!("{limit} stream connections are open already; try again later"),
        )
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(serde_json::json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response()
    }
}
