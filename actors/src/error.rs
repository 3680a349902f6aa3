//! The errors callers see, each with a stable code.

use crate::domain::{DomainError, TransitionRefused};
use crate::store::StoreError;

/// The stable codes of DESIGN.md, shown to clients as `extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorCode {
    /// The input breaks a rule; nothing changed.
    InvalidInput,
    /// No such thing (or not visible to the caller).
    NotFound,
    /// The request clashes with the current state (already waiting, already answered...).
    Conflict,
    /// The caller may not do this.
    Forbidden,
    /// The caller is not signed in.
    Unauthenticated,
    /// Too many requests.
    RateLimited,
    /// The shard's mailbox is full; retry shortly.
    Overloaded,
    /// The shard is restarting or unreachable; retry shortly.
    ShardUnavailable,
    /// Something went wrong inside; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The code as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::ShardUnavailable => "SHARD_UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }
}

/// An error for a caller: a code and a message a person can act on. Internal
/// details never go in `message`; they are logged where the error is made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{message}")]
pub struct AttachError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened and what to do.
    pub message: String,
    /// The input field at fault, for `INVALID_INPUT`.
    pub field: Option<String>,
    /// For `SHARD_UNAVAILABLE`: the shard this process does not run now. Another
    /// node may hold it, and a gateway may send the request there.
    pub not_here: Option<crate::domain::ShardKey>,
}

impl AttachError {
    /// An error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AttachError { code, message: message.into(), field: None, not_here: None }
    }

    /// `NOT_FOUND` for a kind of thing.
    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// `CONFLICT` with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// `INTERNAL`, logging the cause (which must hold no personal data).
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorCode::Internal, "something went wrong inside Attach; the error has been logged, please retry")
    }
}

impl From<DomainError> for AttachError {
    fn from(e: DomainError) -> Self {
        AttachError { code: ErrorCode::InvalidInput, message: e.to_string(), field: Some(e.field), not_here: None }
    }
}

impl From<TransitionRefused> for AttachError {
    fn from(e: TransitionRefused) -> Self {
        AttachError::conflict(e.0)
    }
}

impl From<StoreError> for AttachError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::StaleEpoch { .. } | StoreError::LeaseHeld { .. } | StoreError::LeaseExpired { .. } => {
                tracing::warn!(error = %e, "write refused: shard moved to another writer");
                AttachError::new(ErrorCode::ShardUnavailable, "this community is moving to another node; retry shortly")
            }
            StoreError::Unavailable(_) => {
                tracing::error!(error = %e, "store unavailable");
                AttachError::new(
                    ErrorCode::ShardUnavailable,
                    "storage is unavailable; nothing was changed, retry shortly",
                )
            }
            StoreError::Corrupt(_) => AttachError::internal(e),
        }
    }
}
