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
        // Read by the gateway (forwarding to the node holding the shard), taken out before the answer leaves.
        if let Some(shard) = &e.not_here {
            ext.set(crate::forward::NOT_HERE, shard.to_string());
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
/// come from async-graphql without one and are the client's to fix. So are the
/// argument errors async-graphql raises while executing a field (see
/// `is_argument_error`); any other error without a code is ours.
pub fn ensure_codes(response: &mut Response) {
    for error in &mut response.errors {
        let has_code = error.extensions.as_ref().is_some_and(|ext| ext.get("code").is_some());
        if !has_code {
            let code = if error.path.is_empty() || is_argument_error(&error.message) {
                ErrorCode::InvalidInput
            } else {
                ErrorCode::Internal
            };
            if code == ErrorCode::Internal {
                // An error a resolver raised without going through `to_graphql`: hide its
                // text from the client, and any long number in it from the log (a message
                // that echoes input could hold a PHN).
                tracing::error!(message = %without_long_numbers(&error.message), "resolver error without a code");
                error.message = "something went wrong inside Attach; the error has been logged".to_string();
            }
            let extensions = error.extensions.get_or_insert_with(Default::default);
            extensions.set("code", code.as_str());
            // Validation names the argument it refused: say so as the API's own refusals do.
            if let Some(field) = refused_argument(&error.message) {
                extensions.set("field", field);
            }
        }
    }
}

/// The argument (or input field, as `input.members.0.phn`) an async-graphql
/// validation message refuses: `Invalid value for argument "first", expected type "Int"`.
fn refused_argument(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("Invalid value for argument \"")?;
    rest.split_once('"').map(|(name, _)| name).filter(|name| !name.is_empty())
}

/// Whether an error raised during execution is async-graphql reading a field's
/// argument: a value that passed validation but does not fit the argument's
/// Rust type (an `Int` beyond 32 bits, a negative `minWaitDays`), or a variable
/// the operation declares and the request did not supply. Validation does not
/// catch these, and they are the client's to fix.
fn is_argument_error(message: &str) -> bool {
    message.starts_with("Failed to parse \"")
        || (message.starts_with("Variable ") && message.ends_with(" is not defined."))
        // An input-object variable of another shape (a list, a number), echoed whole.
        || message.starts_with("Expected input type \"")
}

/// `text` with every run of 9 or more digits (spaces between them allowed, as
/// a PHN may be written) replaced by `[number]`.
fn without_long_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let digits = run.chars().filter(char::is_ascii_digit).count();
        if digits >= 9 {
            let trailing = run.len() - run.trim_end().len();
            out.push_str("[number]");
            out.push_str(&run[run.len() - trailing..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == ' ' && !run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::{PathSegment, ServerError};

    fn response_with(message: &str) -> Response {
        let mut error = ServerError::new(message, None);
        error.path = vec![PathSegment::Field("waitlist".into())];
        Response::from_errors(vec![error])
    }

    fn code(response: &Response) -> String {
        match response.errors[0].extensions.as_ref().and_then(|e| e.get("code")) {
            Some(async_graphql::Value::String(s)) => s.clone(),
            other => panic!("no code: {other:?}"),
        }
    }

    #[test]
    fn argument_errors_during_execution_are_invalid_input() {
        for message in [
            "Failed to parse \"Int\": Only integers from -2147483648 to 2147483647 are accepted.",
            "Failed to parse \"Int\": Invalid number (occurred while parsing \"WaitlistFilter\")",
            "Variable c is not defined.",
        ] {
            let mut response = response_with(message);
            ensure_codes(&mut response);
            assert_eq!(code(&response), "INVALID_INPUT", "{message}");
            assert_eq!(response.errors[0].message, message, "the client keeps the reason");
        }
    }

    #[test]
    fn a_refused_argument_is_named_as_the_field() {
        let message = "Invalid value for argument \"first\", expected type \"Int\"";
        let mut response = Response::from_errors(vec![ServerError::new(message, None)]);
        ensure_codes(&mut response);
        assert_eq!(code(&response), "INVALID_INPUT");
        let field = response.errors[0].extensions.as_ref().and_then(|e| e.get("field")).cloned();
        assert_eq!(field, Some(async_graphql::Value::from("first")));
        assert_eq!(
            refused_argument("Invalid value for argument \"input.members.0.phn\", expected type \"String\""),
            Some("input.members.0.phn")
        );
        assert_eq!(refused_argument("Unknown field \"x\""), None);
    }

    #[test]
    fn an_input_object_variable_of_another_shape_is_the_clients_and_long_numbers_stay_out_of_the_log() {
        let message = "Expected input type \"RegisterHouseholdInput\", found [{members: [{phn: \"9936861215\"}]}].";
        let mut response = response_with(message);
        ensure_codes(&mut response);
        assert_eq!(code(&response), "INVALID_INPUT");
        assert_eq!(
            without_long_numbers("phn: \"9936861215\", or 9936 861 215, dob 1984-03-09, 42 and 123456789 "),
            "phn: \"[number]\", or [number], dob 1984-03-09, 42 and [number] "
        );
    }

    #[test]
    fn other_errors_without_a_code_are_internal_and_hidden() {
        let mut response = response_with("connection reset by peer");
        ensure_codes(&mut response);
        assert_eq!(code(&response), "INTERNAL");
        assert!(!response.errors[0].message.contains("connection"));
    }
}
