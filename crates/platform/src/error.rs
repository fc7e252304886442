//! The one error type every handler returns, and its JSON shape (ARCHITECTURE rule 6):
//! `{"error": {"code": "snake_case", "message": "...", "details": ...}}`.
//!
//! Database errors are mapped here, once: constraint violations become 409/422, anything
//! else a 5xx that is logged with its detail and answered without it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// Result of a handler or store call.
pub type ApiResult<T> = Result<T, ApiError>;

/// An error on its way to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code, `snake_case`.
    pub code: &'static str,
    /// Human-readable message; never contains secrets, SQL or stack traces.
    pub message: String,
    /// Optional structured detail (e.g. per-field validation errors).
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (throttling).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// Attaches structured details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Asks the client to retry after `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422: well-formed but invalid; `field` names the offending input.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            format!("{field}: {message}"),
        )
        .with_details(json!({ "field": field, "reason": message }))
    }

    /// 401: no valid credentials.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for a resource kind, e.g. `not_found("user")`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409: conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 409 for an optimistic-concurrency failure, carrying the current version.
    pub fn stale(current_version: i64) -> Self {
        Self::conflict(
            "version_conflict",
            "the resource was changed by someone else; reload it and retry",
        )
        .with_details(json!({ "current_version": current_version }))
    }

    /// 500 for a failure that is logged in full and answered without detail.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    /// 503: a dependency (database, pool) is unavailable right now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// Maps a unique-constraint violation to 409 `code` with `message`, and any other database
/// error as `From<sqlx::Error>` does; for `map_err` on an insert or update.
pub fn on_unique(
    code: &'static str,
    message: &'static str,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |err| match &err {
        sqlx::Error::Database(db) if db.kind() == sqlx::error::ErrorKind::UniqueViolation => {
            ApiError::conflict(code, message)
        }
        _ => ApiError::from(err),
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let Some(details) = self.details {
            body["details"] = details;
        }
        let mut response = (self.status, axum::Json(json!({ "error": body }))).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::error::ErrorKind;
        match &err {
            sqlx::Error::RowNotFound => ApiError::not_found("resource"),
            sqlx::Error::PoolTimedOut => {
                tracing::warn!("database pool timed out");
                ApiError::unavailable("the database is busy; retry shortly")
            }
            sqlx::Error::Database(db) => match db.kind() {
                ErrorKind::UniqueViolation => ApiError::conflict(
                    "already_exists",
                    "a resource with these values already exists",
                ),
                ErrorKind::ForeignKeyViolation => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_reference",
                    "a referenced resource does not exist",
                ),
                ErrorKind::NotNullViolation | ErrorKind::CheckViolation => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "a value violates a constraint",
                ),
                _ => ApiError::internal("database error", &err),
            },
            _ => ApiError::internal("database error", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn renders_the_documented_json_shape() {
        let response = ApiError::stale(7).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["error"]["code"], "version_conflict");
        assert_eq!(body["error"]["details"]["current_version"], 7);
    }

    #[tokio::test]
    async fn retry_after_header_is_set() {
        let response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", "wait")
            .with_retry_after(30)
            .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "30");
    }
}
