//! The server side: [`ServerLayer`] derives a [`Context`] per request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::Protocol;
use super::answer::Answer;
use crate::context::Context;
use crate::grpc_timeout::ParseTimeoutError;
use crate::guard::CancelGuard;
use crate::run::Run;

/// What [`ServerLayer`] does with a request whose timeout header does not
/// follow its grammar (see [`grpc_timeout`](crate::grpc_timeout)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedTimeout {
    /// Answer at once without calling the inner service: for gRPC, HTTP 400
    /// with `grpc-status: 13` (INTERNAL) and `grpc-message: malformed
    /// grpc-timeout: ...`, as grpc-go does; for Connect, `invalid_argument`,
    /// as connect-go does; otherwise `400 Bad Request`. The default.
    #[default]
    Reject,
    /// Ignore the malformed value: the request gets the configured default
    /// timeout, as if it had sent none (or, should it carry several values,
    /// the shortest valid one).
    Ignore,
}

/// A [`Layer`] that gives each request a [`Context`]: the request's own
/// deadline, from its `grpc-timeout` (gRPC) or `connect-timeout-ms` (other)
/// header, bounded by a configured maximum and by a base context.
///
/// The inner service finds the context in the request's extensions
/// (`request.extensions().get::<Context>()`, on the `http::Request` or, in a
/// tonic handler, on the `tonic::Request`). When the
/// context ends before the inner service answers, its future is dropped and
/// the layer answers the protocol's way (see the [module docs](super)).
///
/// The request's deadline is the earliest of:
///
/// - now + the header's timeout, or, without a header (or with a malformed
///   one and [`MalformedTimeout::Ignore`]), now + the
///   [`default_timeout`](ServerLayer::default_timeout) if one is set. A
///   request should send one value; one that sends several gets the
///   shortest, and is malformed if any value is;
/// - now + the [`max_timeout`](ServerLayer::max_timeout), if one is set;
/// - the [`base`](ServerLayer::base) context's deadline.
///
/// With none of these the context has no deadline, and still ends with the
/// base context.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use cancelctx::Context;
/// use cancelctx::tower::ServerLayer;
///
/// // Canceling `shutdown` answers every in-flight request at once.
/// let (shutdown, _stop) = Context::background().with_cancel();
/// let layer = ServerLayer::new()
///     .base(shutdown)
///     .default_timeout(Duration::from_secs(5))
///     .max_timeout(Duration::from_secs(30));
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct ServerLayer {
    base: Context,
    default_timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    malformed: MalformedTimeout,
}

impl ServerLayer {
    /// A layer with the background context as base, no default and no
    /// maximum timeout, rejecting malformed headers.
    pub fn new() -> ServerLayer {
        ServerLayer {
            base: Context::background(),
            default_timeout: None,
            max_timeout: None,
            malformed: MalformedTimeout::Reject,
        }
    }

    /// Derives every request's context from `base` (default:
    /// [`Context::background`]): canceling it, e.g. on server shutdown, ends
    /// every in-flight request (answered as canceled), its deadline bounds
    /// every request's, and its values are visible to every handler.
    pub fn base(mut self, base: Context) -> ServerLayer {
        self.base = base;
        self
    }

    /// The timeout of requests that send no timeout header.
    pub fn default_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.default_timeout = Some(timeout);
        self
    }

    /// The longest timeout any request gets, whatever its header says.
    pub fn max_timeout(mut self, timeout: Duration) -> ServerLayer {
        self.max_timeout = Some(timeout);
        self
    }

    /// What to do with a malformed timeout header (default:
    /// [`MalformedTimeout::Reject`]).
    pub fn on_malformed(mut self, policy: MalformedTimeout) -> ServerLayer {
        self.malformed = policy;
        self
    }

    /// The timeout for a request of `protocol` with `headers`, or the parse
    /// error to reject it with.
    fn timeout(
        &self,
        protocol: Protocol,
        headers: &HeaderMap,
    ) -> Result<Option<Duration>, ParseTimeoutError> {
        let mut requested: Option<Duration> = None;
        for timeout in protocol.timeouts(headers) {
            match (timeout, self.malformed) {
                (Ok(timeout), _) => requested = Some(requested.map_or(timeout, |r| r.min(timeout))),
                (Err(error), MalformedTimeout::Reject) => return Err(error),
                (Err(_), MalformedTimeout::Ignore) => {}
            }
        }
        let timeout = requested.or(self.default_timeout);
        Ok(match (timeout, self.max_timeout) {
            (Some(timeout), Some(max)) => Some(timeout.min(max)),
            (timeout, max) => timeout.or(max),
        })
    }
}

impl Default for ServerLayer {
    fn default() -> ServerLayer {
        ServerLayer::new()
    }
}

impl<S> Layer<S> for ServerLayer {
    type Service = ServerService<S>;

    fn layer(&self, inner: S) -> ServerService<S> {
        ServerService {
            inner,
            config: self.clone(),
        }
    }
}

/// The service made by [`ServerLayer`]: see there.
#[derive(Clone, Debug)]
pub struct ServerService<S> {
    inner: S,
    config: ServerLayer,
}

impl<S> ServerService<S> {
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ServerService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ServerBody<ResBody>>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let protocol = Protocol::of(request.headers());
        let answer = Answer::of(protocol, request.headers(), request.uri().query());
        let timeout = match self.config.timeout(protocol, request.headers()) {
            Ok(timeout) => timeout,
            Err(error) => return ServerFuture::answered(answer.malformed(&error)),
        };
        let (ctx, guard) = match timeout {
            Some(timeout) => self.config.base.with_timeout(timeout),
            None => self.config.base.with_cancel(),
        };
        // Expired on arrival (`grpc-timeout: 0S`, a late request, a base that
        // is shutting down): answer without running the handler.
        if let Some(error) = ctx.err() {
            return ServerFuture::answered(answer.ended(error));
        }
        request.extensions_mut().insert(ctx.clone());
        let run = ctx.run(self.inner.call(request));
        ServerFuture {
            kind: Kind::Running {
                run,
                guard: Some(guard),
                answer,
            },
        }
    }
}

pin_project! {
    /// Response future of [`ServerService`]: the inner service's response, or
    /// the protocol's answer once the request's context ends first.
    ///
    /// When the inner service answers, the request's context is handed to
    /// the response body ([`ServerBody`]): a body that streams after the head
    /// can keep using it, and it is canceled once the body has been sent or
    /// dropped (e.g. the client reset the stream or closed the connection
    /// mid-body), like Go's request context when the handler returns. A
    /// `101 Switching Protocols` answer (a WebSocket, say) is the exception:
    /// the upgraded connection's work runs after its empty body, so the
    /// context is left to end with its deadline or the base context, or once
    /// nothing observes it. When the inner service fails, the context is
    /// canceled.
    ///
    /// # Cancellation safety
    ///
    /// Dropping this future (e.g. hyper does when the client resets the
    /// stream or closes the connection) drops the inner service's future and
    /// cancels the request's context, so work the handler spawned with it
    /// stops too. When the context ends first, the inner future is dropped
    /// before the answer is returned.
    #[must_use = "futures do nothing unless polled"]
    pub struct ServerFuture<F, B> {
        #[pin]
        kind: Kind<F, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B> {
        // Answered by the layer without calling the inner service.
        Answered { response: Option<Response<ServerBody<B>>> },
        // The inner service's future, bounded by the request's context.
        Running {
            #[pin]
            run: Run<F>,
            guard: Option<CancelGuard>,
            answer: Answer,
        },
    }
}

impl<F, B> ServerFuture<F, B> {
    fn answered(response: Response<ServerBody<B>>) -> Self {
        ServerFuture {
            kind: Kind::Answered {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ServerFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<ServerBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("`ServerFuture` polled after completion"))),
            KindProj::Running { run, guard, answer } => match ready!(run.poll(cx)) {
                Ok(Ok(response)) => {
                    // The body owns the guard from now on; but an upgraded
                    // connection's work outlives the (empty) body: it keeps
                    // the context, which ends with its deadline, the base
                    // context, or once nothing observes it.
                    let mut guard = guard.take();
                    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(guard) = guard.take() {
                            guard.detach();
                        }
                    }
                    Poll::Ready(Ok(response.map(|inner| ServerBody {
                        inner,
                        answer: None,
                        guard,
                    })))
                }
                Ok(Err(error)) => {
                    // Cancel now rather than when the future is dropped.
                    drop(guard.take());
                    Poll::Ready(Err(error))
                }
                Err(error) => Poll::Ready(Ok(answer.ended(error))),
            },
        }
    }
}

pin_project! {
    /// Response body of [`ServerService`]: the inner service's body, which
    /// owns the request's [`CancelGuard`]. The request's context is canceled
    /// when the body ends (its last frame, or an error) or is dropped: hyper
    /// drops it once it is sent, or when the client resets the stream or
    /// closes the connection mid-body, so work the handler spawned with the
    /// context to feed the body stops too. The body of a `101 Switching
    /// Protocols` answer is the exception: it does not own the context (see
    /// [`ServerFuture`]), so it cancels nothing.
    ///
    /// It implements [`http_body::Body`] when the inner body does and its
    /// data type converts from `Vec<u8>` (as [`Bytes`] does): the layer's own
    /// answers to Connect calls carry an error message, sent before the
    /// (empty, default) inner body. The inner body is at
    /// [`get_ref`](ServerBody::get_ref) and
    /// [`into_inner`](ServerBody::into_inner) (which cancels the context it
    /// owns).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::sync::{Arc, Mutex};
    /// use cancelctx::{Context, Error};
    /// use cancelctx::tower::ServerLayer;
    /// use http::{Request, Response};
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// // The handler keeps a handle on its request's context, as a task
    /// // streaming the body would.
    /// let kept = Arc::new(Mutex::new(None));
    /// let handler = {
    ///     let kept = kept.clone();
    ///     service_fn(move |request: Request<()>| {
    ///         *kept.lock().unwrap() = request.extensions().get::<Context>().cloned();
    ///         async { Ok::<_, Infallible>(Response::new("body".to_owned())) }
    ///     })
    /// };
    /// let server = ServerLayer::new().layer(handler);
    /// let response = futures::executor::block_on(server.oneshot(Request::new(()))).unwrap();
    /// let ctx = kept.lock().unwrap().take().unwrap();
    /// assert!(!ctx.is_done()); // the body owns the context
    /// assert_eq!(response.body().get_ref(), "body");
    /// drop(response); // sent, or the client left mid-body
    /// assert_eq!(ctx.err(), Some(Error::Canceled));
    /// ```
    ///
    /// [`Bytes`]: https://docs.rs/bytes
    pub struct ServerBody<B> {
        #[pin]
        inner: B,
        // The layer's own answer, sent first (Connect error messages).
        answer: Option<Vec<u8>>,
        guard: Option<CancelGuard>,
    }
}

impl<B> ServerBody<B> {
    /// A body the layer answers with itself: no context to end.
    pub(crate) fn answer(inner: B, answer: Option<Vec<u8>>) -> ServerBody<B> {
        ServerBody {
            inner,
            answer,
            guard: None,
        }
    }

    /// The bytes of the layer's own answer not yet sent.
    #[cfg(test)]
    pub(crate) fn answer_bytes(&self) -> Option<&[u8]> {
        self.answer.as_deref()
    }

    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    /// Gives the inner body back, canceling the request's context if this
    /// body owns it (every answer's but a `101`'s), and dropping the layer's
    /// own answer, if this is one.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Default> Default for ServerBody<B> {
    fn default() -> ServerBody<B> {
        ServerBody::answer(B::default(), None)
    }
}

impl<B> fmt::Debug for ServerBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBody")
            .field("owns_context", &self.guard.is_some())
            .field("answer_bytes", &self.answer.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

impl<B> http_body::Body for ServerBody<B>
where
    B: http_body::Body,
    B::Data: From<Vec<u8>>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        if let Some(answer) = this.answer.take() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(answer.into()))));
        }
        let frame = ready!(this.inner.poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            // The end of the body, or its failure: the request is over.
            drop(this.guard.take());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let answer = self.answer.as_ref().map_or(0, Vec::len) as u64;
        let inner = self.inner.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(answer));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(answer));
        }
        hint
    }
}

impl<F, B> fmt::Debug for ServerFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Answered { .. } => "Answered",
            Kind::Running { .. } => "Running",
        };
        f.debug_struct("ServerFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::grpc_timeout::HEADER;

    /// The timeout `layer` gives a gRPC request sending `values`.
    fn timeout(
        layer: &ServerLayer,
        values: &[&'static str],
    ) -> Result<Option<Duration>, ParseTimeoutError> {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(HEADER, HeaderValue::from_static(value));
        }
        layer.timeout(Protocol::Grpc, &headers)
    }

    #[test]
    fn several_values_give_the_shortest_and_a_malformed_one_is_malformed() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        let strict = ServerLayer::new();
        assert_eq!(timeout(&strict, &[]), Ok(None));
        assert_eq!(timeout(&strict, &["100S"]), Ok(Some(s(100))));
        assert_eq!(timeout(&strict, &["100S", "1m"]), Ok(Some(ms(1))));
        assert_eq!(timeout(&strict, &["1m", "100S"]), Ok(Some(ms(1))));
        assert!(timeout(&strict, &["100S", "1x"]).is_err());
        assert!(timeout(&strict, &["1x", "100S"]).is_err());

        let lenient = ServerLayer::new()
            .default_timeout(s(5))
            .on_malformed(MalformedTimeout::Ignore);
        assert_eq!(timeout(&lenient, &["1x"]), Ok(Some(s(5))));
        assert_eq!(timeout(&lenient, &["100S", "1x"]), Ok(Some(s(100))));
        assert_eq!(timeout(&lenient, &["1x", "2S", "3S"]), Ok(Some(s(2))));
    }
}
