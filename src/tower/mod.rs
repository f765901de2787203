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
//!   (see [`ServerFuture`]).
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
//! `application/grpc+proto` and gRPC-Web);
//! any other request (Connect unary, plain HTTP) uses the Connect header.
//!
//! | | gRPC | other |
//! |---|---|---|
//! | header read and written | [`grpc-timeout`](crate::grpc_timeout::HEADER) | [`connect-timeout-ms`](crate::grpc_timeout::CONNECT_HEADER) |
//! | context's deadline passed | `200`, `grpc-status: 4` (DEADLINE_EXCEEDED) | `504 Gateway Timeout` |
//! | base context canceled | `200`, `grpc-status: 1` (CANCELLED) | `503 Service Unavailable` |
//! | malformed header (default: [`MalformedTimeout::Reject`]) | `400`, `grpc-status: 13` (INTERNAL), `grpc-message: malformed grpc-timeout: ...`, as grpc-go does | `400 Bad Request`, as connect-go answers `invalid_argument` |
//!
//! gRPC answers are *trailers-only* responses (HTTP 200, but 400 for a
//! malformed header, as grpc-go's `earlyAbortStream`): the status is in the headers
//! (with `content-type: application/grpc` and a percent-encoded
//! `grpc-message` of `context deadline exceeded` or `context canceled`) and
//! the body is empty, which every gRPC client (tonic, grpc-go, ...) reads as
//! the call's status. Other answers have an empty body.
//!
//! # Limits
//!
//! - **The deadline starts at [`call`](tower_service::Service::call).** Time a
//!   request spends before it, waiting for the inner service's readiness (a
//!   concurrency limit that is full), is not counted against the request's
//!   timeout, as with tonic's own timeout layer: the context is made when the
//!   request reaches the layer, and `poll_ready` has no request yet. Where
//!   that wait can be long, shed load rather than queue it (e.g. tower's
//!   `load_shed` over the limit), so that a request waits in no queue the
//!   deadline does not see.
//! - **Connect clients read the answers by their HTTP status.** The answers
//!   carry no Connect error body (the layer's only way to make a body is
//!   `ResBody::default()`), and connect-go maps `504` and `503` to
//!   `unavailable`, not `deadline_exceeded` / `canceled`; a Connect streaming
//!   call expects its error in an end-of-stream message. gRPC clients and
//!   plain HTTP are not affected.
//!
//! The header's value is parsed with the strict codec of
//! [`grpc_timeout`] module; the client writes it with
//! [`encode`](crate::grpc_timeout::encode) (or
//! [`encode_connect_timeout_ms`](crate::grpc_timeout::encode_connect_timeout_ms)),
//! rounded up, so the peer never gets less time than the caller has.
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

use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::error::Error;
use crate::grpc_timeout;

mod client;
mod server;

pub use self::client::{ClientFuture, ClientLayer, ClientService, ContextEnded};
pub use self::server::{MalformedTimeout, ServerBody, ServerFuture, ServerLayer, ServerService};

/// The boxed error type of [`ClientService`], as in `tower`: the inner
/// service's error or a [`ContextEnded`], told apart with `downcast_ref`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// gRPC status codes used in synthesized answers.
const GRPC_CANCELLED: &str = "1";
const GRPC_DEADLINE_EXCEEDED: &str = "4";
const GRPC_INTERNAL: &str = "13";

/// The wire protocol of a request, which decides the header and the answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `content-type: application/grpc*`: `grpc-timeout`, grpc-status answers.
    Grpc,
    /// Anything else: `connect-timeout-ms`, HTTP status answers.
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

    /// The answer to a request whose context ended before its response.
    pub(crate) fn ended<B: Default>(self, error: Error) -> Response<B> {
        match (self, error) {
            (Protocol::Grpc, Error::DeadlineExceeded) => {
                grpc_answer(StatusCode::OK, GRPC_DEADLINE_EXCEEDED, &error.to_string())
            }
            (Protocol::Grpc, Error::Canceled) => {
                grpc_answer(StatusCode::OK, GRPC_CANCELLED, &error.to_string())
            }
            (Protocol::Http, Error::DeadlineExceeded) => http_answer(StatusCode::GATEWAY_TIMEOUT),
            (Protocol::Http, Error::Canceled) => http_answer(StatusCode::SERVICE_UNAVAILABLE),
        }
    }

    /// The answer to a request whose timeout header does not parse.
    pub(crate) fn malformed<B: Default>(
        self,
        error: &grpc_timeout::ParseTimeoutError,
    ) -> Response<B> {
        match self {
            // grpc-go: earlyAbortStream{httpStatus: http.StatusBadRequest,
            // status: status.Newf(codes.Internal, "malformed grpc-timeout: %v", err)}
            Protocol::Grpc => grpc_answer(
                StatusCode::BAD_REQUEST,
                GRPC_INTERNAL,
                &format!("malformed grpc-timeout: {error}"),
            ),
            Protocol::Http => http_answer(StatusCode::BAD_REQUEST),
        }
    }
}

/// A trailers-only gRPC answer: `http_status` (200, or 400 for a malformed
/// request as grpc-go answers) with the gRPC status in the headers.
fn grpc_answer<B: Default>(
    http_status: StatusCode,
    status: &'static str,
    message: &str,
) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = http_status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.insert(GRPC_STATUS, HeaderValue::from_static(status));
    let message = HeaderValue::try_from(percent_encode(message))
        .expect("percent-encoded text is visible ASCII");
    headers.insert(GRPC_MESSAGE, message);
    response
}

/// An answer with only an HTTP status.
fn http_answer<B: Default>(status: StatusCode) -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = status;
    response
}

/// Percent-encodes a `grpc-message` value as the gRPC spec asks: every byte
/// outside printable ASCII (0x20..=0x7E), and `%` itself, becomes `%XX`.
pub(crate) fn percent_encode(message: &str) -> String {
    use std::fmt::Write as _;
    let mut encoded = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7E).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_printable_ascii() {
        assert_eq!(
            percent_encode("context deadline exceeded"),
            "context deadline exceeded"
        );
        assert_eq!(percent_encode("100% \"é\"\n"), "100%25 \"%C3%A9\"%0A");
    }

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

    #[test]
    fn malformed_grpc_answer_is_internal() {
        let error = grpc_timeout::parse("5 S").unwrap_err();
        let response: Response<()> = Protocol::Grpc.malformed(&error);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[GRPC_STATUS], "13");
        let message = response.headers()[GRPC_MESSAGE].to_str().unwrap();
        assert!(message.starts_with("malformed grpc-timeout: "), "{message}");
    }
}
