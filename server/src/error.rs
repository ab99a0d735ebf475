//! The one HTTP error type: logs the cause, shows the client a clear message in Jupyter's shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// An unexpected failure: the cause goes to the log, the client gets a generic message.
    pub fn internal(context: &str, cause: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {cause}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, context.to_string())
    }
}

impl From<crate::paths::PathError> for ApiError {
    fn from(e: crate::paths::PathError) -> Self {
        match e {
            crate::paths::PathError::Invalid(..) => ApiError::bad_request(e.to_string()),
            crate::paths::PathError::Outside(..) => ApiError::not_found(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "{}", self.message);
        }
        let body = serde_json::json!({"message": self.message, "reason": null});
        (self.status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
