//! Deadlines across processes (feature `tower`): [`tower`] layers, on [`http`]
//! types, that carry a [`Context`](crate::Context)'s deadline over the wire in the
//! `grpc-timeout` and `connect-timeout-ms` request headers.
//!
//! - [`ServerLayer`] derives a [`Context`](crate::Context) for each incoming request from the
//!   request's timeout header, a configured default and maximum, and a base
//!   context (e.g. a server-shutdown context); puts it in the request's
//!   extensions; drops the inner service's future when the context ends; and
//!   answers the protocol's way. Once the inner service has answered, the
//!   response body ([`ServerBody`]) owns the context, so a streamed response
//!   body can keep using it; it is canceled once the body is sent or dropped
//!   (a `101 Switching Protocols` answer aside: see [`ServerFuture`]).
//! - [`ClientLayer`] reads the [`Context`](crate::Context) in an outgoing request's extensions,
//!   writes its remaining time into the timeout header, fails fast without
//!   sending when it is already done ([`ContextEnded`]), and abandons the call
//!   when it ends while waiting for the response.
//!
//! A service that calls another one puts its request's context, or a child of
//! it, into the outgoing request: the budget then shrinks hop by hop, and every
//! hop stops when the first caller's deadline passes (see the
//! `deadline_chain` example in the repository).
//!
//! # Protocols
//!
//! A request is a **gRPC** request when its `content-type` (any of its
//! values) starts with `application/grpc` (this includes
//! `application/grpc+proto` and gRPC-Web); it is a **Connect** call when its
//! `content-type` starts with `application/connect+` (a streaming call), or
//! it carries `connect-protocol-version` or `connect=v1` in its query (a
//! unary call; Connect's `GET` calls carry the latter, and the method is not
//! checked). Connect and plain HTTP requests use the Connect
//! header; each protocol gets its own answers.
//!
//! | | gRPC | Connect | other HTTP |
//! |---|---|---|---|
//! | header read and written | [`grpc-timeout`](crate::grpc_timeout::HEADER) | [`connect-timeout-ms`](crate::grpc_timeout::CONNECT_HEADER) | [`connect-timeout-ms`](crate::grpc_timeout::CONNECT_HEADER) |
//! | context's deadline passed | `200`, `grpc-status: 4` (DEADLINE_EXCEEDED) | `deadline_exceeded` (unary: `504`) | `504 Gateway Timeout` |
//! | base context canceled | `200`, `grpc-status: 1` (CANCELLED) | `canceled` (unary: `499`) | `503 Service Unavailable` |
//! | malformed header (default: [`MalformedTimeout::Reject`]) | `400`, `grpc-status: 13` (INTERNAL), `grpc-message: malformed grpc-timeout: ...`, as grpc-go does | `invalid_argument` (unary: `400`), `malformed connect-timeout-ms: ...`, as connect-go answers | `400 Bad Request`, `malformed connect-timeout-ms: ...` (text) |
//!
//! gRPC answers are *trailers-only* responses (HTTP 200, but 400 for a
//! malformed header, as grpc-go's `earlyAbortStream`): the status is in the headers
//! (with `content-type: application/grpc` and a percent-encoded
//! `grpc-message` of `context deadline exceeded` or `context canceled`) and
//! the body is empty, which every gRPC client (tonic, grpc-go, ...) reads as
//! the call's status. Connect answers are the protocol's error: for a unary
//! call, the code's HTTP status (as connect-go maps it) with a JSON body
//! `{"code":"deadline_exceeded","message":"context deadline exceeded"}`; for
//! a streaming call, HTTP 200 in the call's content type with only an
//! end-of-stream message carrying `{"error":{...}}`. The Connect answers'
//! bytes come before the (default, empty) inner body of the [`ServerBody`],
//! so the body's data type must convert from `Vec<u8>` (hyper's, tonic's and
//! axum's [`Bytes`] do). Other answers have an empty body, except a malformed
//! header's, whose `text/plain` body says what was wrong.
//!
//! The header's value is parsed with the strict codec of the
//! [`grpc_timeout`] module; the client writes it with
//! [`encode`](crate::grpc_timeout::encode) (or
//! [`encode_connect_timeout_ms`](crate::grpc_timeout::encode_connect_timeout_ms)),
//! rounded up, so the peer never gets less time than the caller has.
//!
//! # Limits
//!
//! **The deadline starts at [`call`](tower_service::Service::call).** Time a
//! request spends before it, waiting for the inner service's readiness (a
//! concurrency limit that is full), is not counted against the request's
//! timeout, as with tonic's own timeout layer: the context is made when the
//! request reaches the layer, and `poll_ready` has no request yet. Where
//! that wait can be long, shed load rather than queue it (e.g. tower's
//! `load_shed` over the limit), so that a request waits in no queue the
//! deadline does not see.
//!
//! [`Bytes`]: https://docs.rs/bytes
//!
//! # Examples
//!
//! A handler behind [`ServerLayer`], called through [`ClientLayer`], in memory
//! (with real peers, put a hyper or tonic server and client in between):
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use cancelctx::Context;
//! use cancelctx::tower::{ClientLayer, ContextEnded, ServerLayer};
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // The handler answers with the budget its request's context has left.
//! let handler = service_fn(|request: Request<()>| async move {
//!     let ctx = request.extensions().get::<Context>().expect("set by ServerLayer");
//!     let budget = ctx.remaining().expect("the request has a deadline");
//!     Ok::<_, Infallible>(Response::new(budget.as_millis().to_string()))
//! });
//! let server = ServiceBuilder::new()
//!     .layer(ServerLayer::new().max_timeout(Duration::from_secs(30)))
//!     .service(handler);
//!
//! // A gRPC request with a 250 ms timeout header.
//! let request = Request::builder()
//!     .header("content-type", "application/grpc")
//!     .header("grpc-timeout", "250m")
//!     .body(())?;
//! let response = futures::executor::block_on(server.clone().oneshot(request))?;
//! let budget_ms: u64 = response.body().get_ref().parse()?;
//! assert!(budget_ms <= 250);
//!
//! // An already expired request is answered without running the handler.
//! let request = Request::builder()
//!     .header("content-type", "application/grpc")
//!     .header("grpc-timeout", "0S")
//!     .body(())?;
//! let response = futures::executor::block_on(server.clone().oneshot(request))?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["grpc-status"], "4"); // DEADLINE_EXCEEDED
//!
//! // The client side writes the header from the request's context.
//! let client = ServiceBuilder::new().layer(ClientLayer::new()).service(server);
//! let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(100));
//! let mut request = Request::new(());
//! request.extensions_mut().insert(ctx);
//! let response = futures::executor::block_on(client.clone().oneshot(request))?;
//! let budget_ms: u64 = response.body().get_ref().parse()?;
//! assert!(budget_ms <= 100);
//!
//! // A request whose context is done is not sent.
//! let (ctx, guard) = Context::background().with_cancel();
//! guard.cancel();
//! let mut request = Request::new(());
//! request.extensions_mut().insert(ctx);
//! let error = futures::executor::block_on(client.oneshot(request)).unwrap_err();
//! let ended = error.downcast_ref::<ContextEnded>().expect("the context ended");
//! assert!(!ended.was_sent());
//! assert_eq!(ended.error(), cancelctx::Error::Canceled);
//! # Ok(())
//! # }
//! ```
//!
//! [`tower`]: https://docs.rs/tower

use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::grpc_timeout;

mod answer;
mod client;
mod server;

pub use self::client::{ClientFuture, ClientLayer, ClientService, ContextEnded};
pub use self::server::{MalformedTimeout, ServerBody, ServerFuture, ServerLayer, ServerService};

/// The boxed error type of [`ClientService`], as in `tower`: the inner
/// service's error or a [`ContextEnded`], told apart with `downcast_ref`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// The wire protocol of a request as far as its timeout header goes: which
/// header carries it, in which unit (the answers are `answer.rs`'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `content-type: application/grpc*`: `grpc-timeout`.
    Grpc,
    /// Anything else (Connect, plain HTTP): `connect-timeout-ms`.
    Http,
}

impl Protocol {
    /// The protocol of a request with these headers: gRPC if any
    /// `content-type` value is (as grpc-go decides: a peer that reads the
    /// request as gRPC must find its `grpc-timeout` bounded).
    pub(crate) fn of(headers: &HeaderMap) -> Protocol {
        let grpc = headers
            .get_all(CONTENT_TYPE)
            .iter()
            .any(|value| value.as_bytes().starts_with(GRPC_CONTENT_TYPE.as_bytes()));
        if grpc { Protocol::Grpc } else { Protocol::Http }
    }

    /// The name of this protocol's timeout header.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Protocol::Grpc => grpc_timeout::HEADER,
            Protocol::Http => grpc_timeout::CONNECT_HEADER,
        }
    }

    /// Parses this protocol's timeout header value (any bytes).
    pub(crate) fn parse(
        self,
        value: &HeaderValue,
    ) -> Result<std::time::Duration, grpc_timeout::ParseTimeoutError> {
        // Non-UTF-8 bytes become U+FFFD, which both grammars reject; valid
        // values (ASCII) borrow without allocating.
        let text = String::from_utf8_lossy(value.as_bytes());
        match self {
            Protocol::Grpc => grpc_timeout::parse(&text),
            Protocol::Http => grpc_timeout::parse_connect_timeout_ms(&text),
        }
    }

    /// Every value of this protocol's timeout header, parsed, in order. A
    /// request should carry at most one; when it carries several, each
    /// counts (a peer may read any: grpc-go takes the last valid one and
    /// rejects the call if any is malformed).
    pub(crate) fn timeouts(
        self,
        headers: &HeaderMap,
    ) -> impl Iterator<Item = Result<std::time::Duration, grpc_timeout::ParseTimeoutError>> + '_
    {
        headers
            .get_all(self.header())
            .iter()
            .map(move |value| self.parse(value))
    }

    /// Encodes `timeout` for this protocol's header, rounded up.
    pub(crate) fn encode(self, timeout: std::time::Duration) -> HeaderValue {
        let text = match self {
            Protocol::Grpc => grpc_timeout::encode(timeout),
            Protocol::Http => grpc_timeout::encode_connect_timeout_ms(timeout),
        };
        HeaderValue::try_from(text).expect("encoded timeouts are ASCII digits and a unit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_follows_content_type() {
        let mut headers = HeaderMap::new();
        assert_eq!(Protocol::of(&headers), Protocol::Http);
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert_eq!(Protocol::of(&headers), Protocol::Grpc);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(Protocol::of(&headers), Protocol::Http);
        // Several values: gRPC if any is.
        headers.append(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert_eq!(Protocol::of(&headers), Protocol::Grpc);
    }
}
