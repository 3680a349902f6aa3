//! The one place errors become GraphQL errors with a stable `extensions.code`.

use async_graphql::{ErrorExtensions, Response};
use attach_actors::domain::DomainError;
use attach_actors::error::{AttachError, ErrorCode};

/// Converts an [`AttachError`] into a GraphQL error carrying its code (and the
/// input field at fault, when there is one).
pub fn to_graphql(e: AttachError) -> async_graphql::Error {
    async_graphql::Error::new(e.message).extend_with(|_, ext| {
        ext.set("code", e.code.as_str());
        if let Some(field) = &e.field {
            ext.set("field", field.as_str());
        }
    })
}

/// `.gql()` on results from the core, so a resolver can `?` them without losing the code.
pub trait GqlResult<T> {
    /// Maps the error with [`to_graphql`].
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> GqlResult<T> for Result<T, AttachError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(to_graphql)
    }
}

impl<T> GqlResult<T> for Result<T, DomainError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(|e| to_graphql(e.into()))
    }
}

/// Gives every error in a response a code: errors raised before execution
/// (syntax, unknown fields, wrong argument types, depth and complexity limits)
/// come from async-graphql without one and are the client's to fix.
pub fn ensure_codes(response: &mut Response) {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|ext| ext.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() { ErrorCode::InvalidInput } else { ErrorCode::Internal };
            if code == ErrorCode::Internal {
                // An error a resolver raised without going through `to_graphql`: hide its text.
                tracing::error!(message = %error.message, "resolver error without a code");
                error.message = "something went wrong inside Attach; the error has been logged".to_string();
            }
            error.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
        }
    }
}
