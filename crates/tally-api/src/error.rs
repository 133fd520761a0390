//! Errors as RFC 9457 problem details: a status, a stable snake_case `code` and the `param` at
//! fault. Internal failures are logged and answered without their message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tally_app::AppError;
use tally_core::error::CoreError;

/// An API error: status, stable code, offending parameter and a message for people.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: String,
    /// Path of the offending field, if any.
    pub param: Option<String>,
    /// What went wrong.
    pub detail: String,
}

/// The body of every error response (RFC 9457 problem details plus `code` and `param`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    pub r#type: String,
    /// The HTTP status's reason phrase.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: String,
    /// Stable snake_case code, for programs.
    pub code: String,
    /// Path of the offending field, when one is at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

impl ApiError {
    /// An error with the given parts.
    pub fn new(
        status: StatusCode,
        code: &str,
        param: Option<&str>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            code: code.into(),
            param: param.filter(|p| !p.is_empty()).map(str::to_string),
            detail: detail.into(),
        }
    }

    /// 404 for an object that does not exist or belongs to another tenant.
    pub fn not_found(kind: &str, param: &str, id: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            Some(param),
            format!("no {kind} `{id}`"),
        )
    }

    /// 400 for a malformed request.
    pub fn bad_request(code: &str, param: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, param, detail)
    }

    /// 422 for a well-formed request the rules refuse.
    pub fn unprocessable(code: &str, param: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, param, detail)
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> Self {
        let status = match &e {
            CoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), Some(e.param()), e.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Core(c) => c.into(),
            AppError::NotFound { kind, param, id } => ApiError::not_found(kind, &param, &id),
            AppError::Invalid { param, detail } => {
                ApiError::unprocessable("invalid_value", Some(&param), detail)
            }
            AppError::Conflict => {
                ApiError::new(StatusCode::CONFLICT, "conflict", None, e.to_string())
            }
            AppError::Store(s) => {
                tracing::error!(error = %s, "storage failure");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    None,
                    "the database could not complete the request; retry",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            r#type: format!("https://tally.dev/problems/{}", self.code),
            title: title.to_string(),
            status: self.status.as_u16(),
            detail: self.detail,
            code: self.code,
            param: self.param,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response()
    }
}
