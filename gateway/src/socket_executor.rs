//! Queries and mutations sent over a subscription connection, answered as
//! over HTTP: a query's failed top-level fields are null in their place (or
//! make `data` null), its fields come in the order it selects them, and on a
//! node with peers one for a shard another node holds is sent on to that node,
//! and one whose top-level fields want shards on several nodes has each such
//! field run where its shard is (DECISIONS 28 and 31).
//!
//! async-graphql runs every operation of a connection through
//! [`Executor::execute_stream`]; this executor runs a query or mutation once,
//! as the schema would, and then finishes the answer the way
//! `routes::execute` does, with the credential the connection signed in with.
//! Subscriptions need no forwarding (every node carries every community's
//! feed) and go to the schema unchanged.

use std::sync::{Arc, Mutex};

use async_graphql::{Data, Executor, Request, Response};
use attach_actors::system::AttachSystem;
use axum::http::{HeaderMap, HeaderValue, header};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::forward::Forwarder;
use crate::graphql::AttachSchema;
use crate::graphql::failed::{self, NullableRoots};

/// The `Authorization` a connection signed in with, once it has (from the
/// upgrade request or its `connection_init`), for what is sent on to peers.
pub type Credential = Arc<Mutex<Option<HeaderValue>>>;

/// The schema, with what finishing and forwarding an answer need.
#[derive(Clone)]
pub struct SocketExecutor {
    schema: AttachSchema,
    system: Arc<AttachSystem>,
    forwarder: Arc<Forwarder>,
    nullable: Arc<NullableRoots>,
    credential: Credential,
}

impl SocketExecutor {
    /// Runs operations on `schema`, sending on to peers with the connection's `credential`.
    pub fn new(
        schema: AttachSchema,
        system: Arc<AttachSystem>,
        forwarder: Arc<Forwarder>,
        nullable: Arc<NullableRoots>,
        credential: Credential,
    ) -> Self {
        SocketExecutor { schema, system, forwarder, nullable, credential }
    }

    /// The headers a request sent on carries: the connection's credential.
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = self.credential.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }
}

impl Executor for SocketExecutor {
    async fn execute(&self, mut request: Request) -> Response {
        if let Some(refused) = refused_before_running(&mut request) {
            return refused;
        }
        self.schema.execute(request).await
    }

    fn execute_stream(&self, mut request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        if let Some(refused) = refused_before_running(&mut request) {
            return futures::stream::once(async move { refused }).boxed();
        }
        let session = session_data.unwrap_or_default();
        let kind = crate::forward::operation_type(&mut request);
        let single = matches!(kind, Some(t) if t != async_graphql::parser::types::OperationType::Subscription);
        if !single {
            return self.schema.execute_stream_with_session_data(request, session);
        }
        let mutation = kind == Some(async_graphql::parser::types::OperationType::Mutation);
        let fields = crate::forward::query_fields(&mut request);
        // Kept to read the query again if its answer has a failed nested field.
        let text = fields.is_some().then(|| (request.query.clone(), request.operation_name.clone()));
        // The request as a peer reads it (a WebSocket carries no files), when there are peers.
        let body = self.forwarder.has_peers().then(|| {
            let body = serde_json::json!({
                "query": request.query,
                "variables": request.variables,
                "operationName": request.operation_name,
            });
            axum::body::Bytes::from(body.to_string())
        });
        let this = self.clone();
        futures::stream::once(async move {
            let mut answers = this.schema.execute_stream_with_session_data(request, session);
            let Some(mut response) = answers.next().await else { return Response::default() };
            failed::in_order(&mut response, fields.as_deref());
            let (system, forwarder) = (&this.system, &this.forwarder);
            if let Some(body) = body {
                forwarder.complete(system, &this.headers(), &body, &mut response, mutation).await;
            }
            failed::finish(&mut response, fields.as_deref(), &this.nullable, || text);
            response
        })
        .boxed()
    }
}

/// The refusal of a request that must not run at all: its text nests too deeply
/// to parse safely (`graphql::nesting`; the message was refused already when
/// it was counted against the caller's quota, so this is a second guard), or
/// it misuses a directive or leaves out a required variable (`graphql::cannot_run`).
fn refused_before_running(request: &mut Request) -> Option<Response> {
    let why = if crate::graphql::nesting::within(&request.query) {
        crate::graphql::cannot_run(request)?
    } else {
        crate::graphql::nesting::refusal()
    };
    let mut response = Response::from_errors(vec![async_graphql::ServerError::new(why, None)]);
    crate::graphql::error::ensure_codes(&mut response);
    Some(response)
}
