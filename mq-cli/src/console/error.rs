//! Errors as the page gets them: a status code and `{"error": "..."}`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A refused or failed request.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message });
        (self.status, Json(body)).into_response()
    }
}

impl From<mq::Error> for ApiError {
    /// The caller's mistakes are 4xx; the broker's failures 5xx, so the
    /// page can tell "fix your input" from "the backend is down".
    fn from(error: mq::Error) -> Self {
        let status = match &error {
            mq::Error::Config(_) | mq::Error::Invalid { .. } => StatusCode::BAD_REQUEST,
            mq::Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            mq::Error::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            mq::Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            mq::Error::Closed(_) => StatusCode::SERVICE_UNAVAILABLE,
            mq::Error::Connection { .. }
            | mq::Error::Rejected(_)
            | mq::Error::Codec { .. }
            | mq::Error::Backend { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(rejection.status(), rejection.body_text())
    }
}

/// Any other path under `/api`.
pub(crate) async fn no_such_api() -> ApiError {
    ApiError::not_found("no such API: see the console's page for what it offers")
}

/// A known path with the wrong method: actions take POST only, so that
/// no GET (a link, an image) changes anything.
pub(crate) async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed here: reads are GET, actions are POST",
    )
}
