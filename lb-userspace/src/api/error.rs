//! Errors as the API answers them: a status and `{"error", "problems"}`. The
//! agent refuses in its own terms ([`RequestError`]); only here do they
//! become HTTP.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::{agent::inbox::RequestError, config::Problem};

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

    pub fn invalid(message: impl Into<String>, problems: Vec<Problem>) -> Self {
        let body = ErrorBody { error: message.into(), problems };
        Self { status: StatusCode::UNPROCESSABLE_ENTITY, body }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let message = e.to_string();
        match e {
            RequestError::Invalid { message, problems } => Self::invalid(message, problems),
            RequestError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, message),
            RequestError::Conflict(_) => Self::new(StatusCode::CONFLICT, message),
            RequestError::Forbidden { field, reason } => Self {
                status: StatusCode::FORBIDDEN,
                body: ErrorBody { error: message, problems: vec![Problem::new(field, "", reason)] },
            },
            RequestError::Dataplane { .. } | RequestError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refusal of the agent's has the status docs/api.md gives it, and
    /// keeps its message and problems.
    #[test]
    fn refusals_map_to_their_status() {
        let problem = Problem::new("port", "70000", "out of range");
        let cases = [
            (RequestError::invalid(problem.clone()), 422, "port: out of range", vec![problem]),
            (RequestError::NotFound("no VIP named \"x\"".into()), 404, "no VIP named \"x\"", vec![]),
            (RequestError::Conflict("exists".into()), 409, "exists", vec![]),
            (
                RequestError::Forbidden { field: "exec_command".into(), reason: "file only" },
                403,
                "exec_command: file only",
                vec![Problem::new("exec_command", "", "file only")],
            ),
            (
                RequestError::Dataplane { doing: "applying the change", error: anyhow::anyhow!("EPERM") },
                500,
                "applying the change failed: EPERM",
                vec![],
            ),
            (RequestError::Internal("no MTU".into()), 500, "no MTU", vec![]),
        ];
        for (refusal, status, message, problems) in cases {
            let e = ApiError::from(refusal);
            assert_eq!(e.status.as_u16(), status, "{e:?}");
            assert_eq!(e.body, ErrorBody { error: message.into(), problems });
        }
    }
}
