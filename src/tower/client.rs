//! The client side: [`ClientLayer`] sends a request's [`Context`] deadline.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{BoxError, Protocol};
use crate::context::Context;
use crate::error::Error;
use crate::run::Run;

/// A [`Layer`] that sends the deadline of the [`Context`] in each request's
/// extensions to the peer, and bounds the call by that context.
///
/// For a request whose extensions hold a `Context`:
///
/// - if the context is done, or its deadline has passed, the request is not
///   sent: the call fails at once with a [`ContextEnded`] whose
///   [`was_sent`](ContextEnded::was_sent) is `false`;
/// - if the context has a deadline, its remaining time is written to the
///   `grpc-timeout` header (gRPC requests, see the [module docs](super)) or
///   the `connect-timeout-ms` header (others), rounded up. A header the caller
///   already set is kept when it is one valid value no longer than that;
///   otherwise it is replaced by one value, the shortest of the remaining
///   time and the caller's valid values (a peer may read any of several
///   values, so none may be longer);
/// - if the context ends before the inner service's response arrives, the
///   inner future is dropped (hyper then resets the HTTP/2 stream or closes
///   the HTTP/1 connection) and the call fails with a [`ContextEnded`] whose
///   [`was_sent`](ContextEnded::was_sent) is `true`. Only the response head is
///   bounded: bound reads of a streamed response body with
///   [`Context::run`] yourself.
///
/// A request without a `Context` passes through unchanged.
///
/// The service's error is a [`BoxError`], as with tower's own middleware: the
/// inner service's error, or a [`ContextEnded`]. It therefore works under
/// `tonic::client::Grpc`, where a [`ContextEnded`] becomes a `Status` with
/// code `Unknown`, its message, and the `ContextEnded` as its `source()`.
///
/// # Examples
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use cancelctx::{Context, grpc_timeout};
/// use cancelctx::tower::ClientLayer;
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// // Stands for the network: answers with the grpc-timeout header it got.
/// let peer = service_fn(|request: Request<()>| async move {
///     let header = request.headers()[grpc_timeout::HEADER].to_str().unwrap().to_owned();
///     Ok::<_, Infallible>(Response::new(header))
/// });
/// let client = ServiceBuilder::new().layer(ClientLayer::new()).service(peer);
///
/// let (ctx, _guard) = Context::background().with_timeout(Duration::from_secs(2));
/// let mut request = Request::builder()
///     .header("content-type", "application/grpc")
///     .body(())?;
/// request.extensions_mut().insert(ctx);
/// let response = futures::executor::block_on(client.oneshot(request))?;
/// let sent = grpc_timeout::parse(response.body())?;
/// assert!(sent <= Duration::from_secs(2) && sent > Duration::from_secs(1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientLayer {
    _private: (),
}

impl ClientLayer {
    /// The layer. It has no settings: everything comes from each request's
    /// [`Context`].
    pub fn new() -> ClientLayer {
        ClientLayer { _private: () }
    }
}

impl<S> Layer<S> for ClientLayer {
    type Service = ClientService<S>;

    fn layer(&self, inner: S) -> ClientService<S> {
        ClientService::new(inner)
    }
}

/// The service made by [`ClientLayer`]: see there.
#[derive(Clone, Debug)]
pub struct ClientService<S> {
    inner: S,
}

impl<S> ClientService<S> {
    /// Wraps `inner`, like `ClientLayer::new().layer(inner)`.
    pub fn new(inner: S) -> ClientService<S> {
        ClientService { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Gives the inner service back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for ClientService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ClientFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let Some(ctx) = request.extensions().get::<Context>().cloned() else {
            return ClientFuture {
                kind: Kind::Plain {
                    future: self.inner.call(request),
                },
            };
        };
        let remaining = ctx.remaining();
        if let Some(error) = ctx.err() {
            return ClientFuture::not_sent(error);
        }
        if let Some(remaining) = remaining {
            // Past the deadline, even if the timer has not fired yet.
            if remaining.is_zero() {
                return ClientFuture::not_sent(Error::DeadlineExceeded);
            }
            write_timeout(&mut request, remaining);
        }
        let run = ctx.run(self.inner.call(request));
        ClientFuture {
            kind: Kind::Bounded { run },
        }
    }
}

/// Writes `remaining` to the request's timeout header, unless the header
/// already holds one valid value no longer than that; replaces several values
/// by the shortest valid one (or `remaining`).
fn write_timeout<B>(request: &mut Request<B>, remaining: Duration) {
    let protocol = Protocol::of(request.headers());
    let (mut values, mut keep, mut send) = (0, true, remaining);
    for timeout in protocol.timeouts(request.headers()) {
        values += 1;
        match timeout {
            Ok(timeout) if timeout <= remaining => send = send.min(timeout),
            _ => keep = false,
        }
    }
    if values != 1 || !keep {
        request
            .headers_mut()
            .insert(protocol.header(), protocol.encode(send));
    }
}

pin_project! {
    /// Response future of [`ClientService`]: the inner service's response,
    /// or a [`ContextEnded`] error once the request's context ends first.
    ///
    /// # Cancellation safety
    ///
    /// Dropping this future drops the inner service's future, which abandons
    /// the request the way the inner service does (hyper resets the HTTP/2
    /// stream or closes the HTTP/1 connection). When the context ends first,
    /// the inner future is dropped before the error is returned.
    #[must_use = "futures do nothing unless polled"]
    pub struct ClientFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        // Failed before sending.
        NotSent { error: Option<Error> },
        // No context in the request: the inner future as is.
        Plain { #[pin] future: F },
        // The inner future, bounded by the request's context.
        Bounded { #[pin] run: Run<F> },
    }
}

impl<F> ClientFuture<F> {
    fn not_sent(error: Error) -> Self {
        ClientFuture {
            kind: Kind::NotSent { error: Some(error) },
        }
    }
}

impl<F, T, E> Future for ClientFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::NotSent { error } => {
                let error = error
                    .take()
                    .expect("`ClientFuture` polled after completion");
                Poll::Ready(Err(ContextEnded { error, sent: false }.into()))
            }
            KindProj::Plain { future } => future.poll(cx).map_err(Into::into),
            KindProj::Bounded { run } => Poll::Ready(match ready!(run.poll(cx)) {
                Ok(result) => result.map_err(Into::into),
                Err(error) => Err(ContextEnded { error, sent: true }.into()),
            }),
        }
    }
}

impl<F> fmt::Debug for ClientFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::NotSent { .. } => "NotSent",
            Kind::Plain { .. } => "Plain",
            Kind::Bounded { .. } => "Bounded",
        };
        f.debug_struct("ClientFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// The error of a [`ClientService`] call whose request's [`Context`] ended
/// before the response arrived: the context's [`Error`], and whether the
/// request had been sent.
///
/// It reaches the caller inside a [`BoxError`]; find it with
/// `error.downcast_ref::<ContextEnded>()` (through tonic:
/// `status.source().and_then(|e| e.downcast_ref::<ContextEnded>())`).
///
/// Its `Display` is `request not sent: ` or `request abandoned: ` followed by
/// the context's error, e.g. `request not sent: context deadline exceeded`.
///
/// # Examples
///
/// ```
/// use cancelctx::Error;
/// use cancelctx::tower::ContextEnded;
///
/// fn retry_safe(error: &(dyn std::error::Error + 'static)) -> bool {
///     error.downcast_ref::<ContextEnded>().is_some_and(|ended| !ended.was_sent())
/// }
/// # let _ = retry_safe;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContextEnded {
    error: Error,
    sent: bool,
}

impl ContextEnded {
    /// Why the context ended: [`Error::DeadlineExceeded`] or
    /// [`Error::Canceled`].
    pub fn error(&self) -> Error {
        self.error
    }

    /// Whether the request had been handed to the inner service (and so may
    /// have reached the peer) before the context ended. `false` means nothing
    /// was sent.
    pub fn was_sent(&self) -> bool {
        self.sent
    }

    /// Whether the context ran out of time (its deadline, or an ancestor's,
    /// passed).
    pub fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }
}

impl fmt::Display for ContextEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.sent {
            "request abandoned"
        } else {
            "request not sent"
        };
        write!(f, "{what}: {}", self.error)
    }
}

// No `source()`: the context's error is already in the message.
impl StdError for ContextEnded {}

impl From<ContextEnded> for Error {
    fn from(ended: ContextEnded) -> Error {
        ended.error
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderValue, Request};

    use super::write_timeout;
    use crate::grpc_timeout::{HEADER, encode};

    /// The `grpc-timeout` values a request carrying `values` goes out with,
    /// `remaining` before its context's deadline.
    fn sent(values: &[&'static str], remaining: Duration) -> Vec<String> {
        let mut request = Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        for value in values {
            request
                .headers_mut()
                .append(HEADER, HeaderValue::from_static(value));
        }
        write_timeout(&mut request, remaining);
        request
            .headers()
            .get_all(HEADER)
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn one_value_no_longer_than_the_remaining_time_goes_out() {
        let ten = Duration::from_secs(10);
        let ms = Duration::from_millis;
        assert_eq!(sent(&[], ten), [encode(ten)]);
        assert_eq!(sent(&["50m"], ten), ["50m"]);
        assert_eq!(sent(&["1H"], ten), [encode(ten)]);
        assert_eq!(sent(&["1x"], ten), [encode(ten)]);
        // Several values: the peer may read any (grpc-go: the last), so one
        // goes out, the shortest.
        assert_eq!(sent(&["1m", "100S"], ten), [encode(ms(1))]);
        assert_eq!(sent(&["100S", "2S"], ten), [encode(ms(2000))]);
        assert_eq!(sent(&["2S", "1x"], ten), [encode(ms(2000))]);
        assert_eq!(sent(&["1H", "2H"], ten), [encode(ten)]);
    }
}
