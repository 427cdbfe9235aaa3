//! What the API asks of the reconcile loop, and what the loop answers, in the
//! agent's own terms: what a change did, or why it was refused. The API
//! turns these into status codes and JSON bodies (api/error.rs).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    api::Caller,
    config::{Config, Problem},
    reconcile::ApplyReport,
    runtime::{AdminStates, Op, OpError},
};

/// What an accepted change left behind.
#[derive(Debug, Clone)]
pub struct Applied {
    pub config: Arc<Config>,
    pub admin: AdminStates,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    /// What the apply of the reloaded config wrote to the maps.
    pub report: ApplyReport,
    /// Runtime operations that no longer applied and were dropped, each with why.
    pub dropped: Vec<String>,
}

/// A change for the reconcile loop, with where to send its answer.
#[derive(Debug)]
pub enum Request {
    /// Runtime operations, applied together or not at all.
    Apply {
        ops: Vec<Op>,
        caller: Caller,
        reply: oneshot::Sender<Result<Applied, RequestError>>,
    },
    Reload {
        discard_runtime: bool,
        caller: Caller,
        reply: oneshot::Sender<Result<Reloaded, RequestError>>,
    },
}

/// Why a change was not made. Every refusal changes nothing; after a
/// `Dataplane` or `Internal` failure, what was in force stays in force.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The change, or the file a reload read, would make an invalid config;
    /// `problems` name the fields (as the request names them, or in the file).
    #[error("{message}")]
    Invalid { message: String, problems: Vec<Problem> },
    /// No such VIP or backend.
    #[error("{0}")]
    NotFound(String),
    /// The VIP or backend, or its name, exists already.
    #[error("{0}")]
    Conflict(String),
    /// A key only the config file may set (see `runtime::restricted_key`).
    #[error("{field}: {reason}")]
    Forbidden { field: String, reason: &'static str },
    /// The change was valid, but writing it to the data plane failed.
    #[error("{doing} failed: {error:#}")]
    Dataplane {
        doing: &'static str,
        #[source]
        error: anyhow::Error,
    },
    /// Something the change needed from the host could not be had.
    #[error("{0}")]
    Internal(String),
}

impl RequestError {
    /// Refused with one problem, which is also the message.
    pub fn invalid(problem: Problem) -> Self {
        Self::Invalid { message: format!("{}: {}", problem.field, problem.reason), problems: vec![problem] }
    }
}

impl From<OpError> for RequestError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::NotFound(m) => Self::NotFound(m),
            OpError::Conflict(m) => Self::Conflict(m),
            OpError::Invalid { message, problems } => Self::Invalid { message, problems },
        }
    }
}
