//! Errors as the API answers them: a status and `{"error", "problems"}`.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{config::Problem, runtime::OpError};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// Validation problems, each naming its field (its `location` only for reloads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<Problem>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { error: message.into(), problems: Vec::new() } }
    }

    pub fn invalid(message: impl Into<String>, problems: &[Problem]) -> Self {
        let body = ErrorBody { error: message.into(), problems: problems.to_vec() };
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, body }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            OpError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            OpError::Invalid { message, problems } => Self::invalid(message, &problems),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
