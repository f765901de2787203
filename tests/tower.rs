//! `cancelctx::tower` with real peers: hyper servers and clients over
//! loopback (127.0.0.1, port 0), HTTP/2 for gRPC requests and HTTP/1.1 for
//! the others. Every request loop is bounded; every wait has a time limit.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cancelctx::tower::{ClientLayer, ContextEnded, MalformedTimeout, ServerLayer};
use cancelctx::{Context, Error, grpc_timeout};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type Body = Full<Bytes>;

/// Response header in which handlers report the budget their request's
/// context had left, in microseconds, or `none`.
const REMAINING: &str = "x-remaining-us";
/// Response header in which the echo handler reports the timeout headers it got.
const GOT_GRPC: &str = "x-got-grpc-timeout";
const GOT_CONNECT: &str = "x-got-connect-timeout-ms";

/// Generous bound on any wait: a loaded 2-core CI machine is slow, not stuck.
const PATIENCE: Duration = Duration::from_secs(5);

/// Serves `service` on 127.0.0.1 (HTTP/1.1 and HTTP/2 prior knowledge); the
/// accept loop ends with the test's runtime. Returns the address and a count
/// of accepted connections.
async fn serve<S, B>(service: S) -> (SocketAddr, Arc<AtomicUsize>)
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

fn http1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn http2_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn grpc_request(addr: SocketAddr, timeout: Option<&str>) -> Request<Body> {
    let mut builder = Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(timeout) = timeout {
        builder = builder.header(grpc_timeout::HEADER, timeout);
    }
    builder.body(Body::default()).unwrap()
}

fn http_request(addr: SocketAddr, timeout: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(format!("http://{addr}/work"));
    if let Some(timeout) = timeout {
        builder = builder.header(grpc_timeout::CONNECT_HEADER, timeout);
    }
    builder.body(Body::default()).unwrap()
}

/// A handler that answers at once with the budget its request's context has.
async fn report_budget(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let ctx = request
        .extensions()
        .get::<Context>()
        .expect("ServerLayer sets a Context");
    let remaining = match ctx.remaining() {
        Some(remaining) => remaining.as_micros().to_string(),
        None => "none".to_owned(),
    };
    Ok(Response::builder()
        .header(REMAINING, remaining)
        .body(Body::default())
        .unwrap())
}

/// The budget a `report_budget` handler saw, `None` for no deadline.
fn reported_budget(response: &Response<Incoming>) -> Option<Duration> {
    let value = response.headers()[REMAINING].to_str().unwrap();
    (value != "none").then(|| Duration::from_micros(value.parse().unwrap()))
}

fn assert_budget(seen: Option<Duration>, sent: Duration) {
    let seen = seen.expect("the request has a deadline");
    assert!(seen <= sent, "saw {seen:?}, more than the {sent:?} sent");
    // Generous: the request may wait on a loaded machine.
    assert!(
        seen + Duration::from_millis(250) > sent,
        "saw {seen:?} of {sent:?}"
    );
}

/// Counts calls, sends the call's start, never answers, and reports on
/// `dropped` when its future is dropped.
#[derive(Clone)]
struct Hang {
    calls: Arc<AtomicUsize>,
    started: mpsc::UnboundedSender<()>,
    dropped: mpsc::UnboundedSender<Instant>,
}

struct DropReport(mpsc::UnboundedSender<Instant>);

impl Drop for DropReport {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

fn hang() -> (
    Hang,
    mpsc::UnboundedReceiver<()>,
    mpsc::UnboundedReceiver<Instant>,
) {
    let (started, started_rx) = mpsc::unbounded_channel();
    let (dropped, dropped_rx) = mpsc::unbounded_channel();
    (
        Hang {
            calls: Arc::default(),
            started,
            dropped,
        },
        started_rx,
        dropped_rx,
    )
}

impl Service<Request<Incoming>> for Hang {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Incoming>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.started.send(());
        let report = DropReport(self.dropped.clone());
        Box::pin(async move {
            let _report = report;
            std::future::pending::<()>().await;
            unreachable!()
        })
    }
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {PATIENCE:?}"))
}

fn header<'a>(response: &'a Response<Incoming>, name: &str) -> &'a str {
    response.headers()[name].to_str().unwrap()
}

/// Asserts a trailers-only gRPC answer with `status` and `message`.
async fn assert_grpc_answer(response: Response<Incoming>, status: &str, message: &str) {
    // grpc-go answers a malformed request (INTERNAL) with HTTP 400.
    let http_status = if status == "13" {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    assert_eq!(response.status(), http_status);
    assert_eq!(header(&response, "content-type"), "application/grpc");
    assert_eq!(header(&response, "grpc-status"), status);
    assert!(
        header(&response, "grpc-message").starts_with(message),
        "{response:?}"
    );
    let body = within("body", response.into_body().collect())
        .await
        .unwrap();
    assert!(
        body.trailers().is_none(),
        "trailers-only: the status is in the headers"
    );
    assert!(body.to_bytes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_header_becomes_the_request_deadline() {
    let layer = ServerLayer::new().max_timeout(Duration::from_secs(30));
    let (addr, _) = serve(layer.layer(service_fn(report_budget))).await;
    let client = http2_client();
    for (sent, header) in [
        (Duration::from_millis(500), "500m"),
        (Duration::from_secs(3), "3S"),
    ] {
        let response = within("response", client.request(grpc_request(addr, Some(header)))).await;
        let response = response.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_budget(reported_budget(&response), sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_ms_header_for_other_requests() {
    let (addr, _) = serve(ServerLayer::new().layer(service_fn(report_budget))).await;
    let client = http1_client();
    let response = within("response", client.request(http_request(addr, Some("400")))).await;
    assert_budget(
        reported_budget(&response.unwrap()),
        Duration::from_millis(400),
    );

    // A grpc-timeout on a request that is not gRPC is not its header.
    let mut request = http_request(addr, None);
    request
        .headers_mut()
        .insert(grpc_timeout::HEADER, "100m".parse().unwrap());
    let response = within("response", client.request(request)).await.unwrap();
    assert_eq!(reported_budget(&response), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_and_max_timeouts_bound_the_deadline() {
    let layer = ServerLayer::new()
        .default_timeout(Duration::from_millis(300))
        .max_timeout(Duration::from_secs(1));
    let (addr, _) = serve(layer.layer(service_fn(report_budget))).await;
    let client = http2_client();
    let cases = [
        (None, Duration::from_millis(300)), // no header: the default
        (Some("700m"), Duration::from_millis(700)), // the header, longer than the default
        (Some("1M"), Duration::from_secs(1)), // capped by the maximum
        (Some("100m"), Duration::from_millis(100)), // the header, shorter than both
    ];
    for (header, expected) in cases {
        let response = within("response", client.request(grpc_request(addr, header))).await;
        assert_budget(reported_budget(&response.unwrap()), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_drops_the_handler_and_answers_grpc_deadline_exceeded() {
    let (handler, mut started, mut dropped) = hang();
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    let begin = Instant::now();
    let response = within(
        "response",
        http2_client().request(grpc_request(addr, Some("150m"))),
    );
    let response = response.await.unwrap();
    let elapsed = begin.elapsed();
    assert!(
        elapsed >= Duration::from_millis(150),
        "answered early: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(150) + PATIENCE / 2,
        "answered late: {elapsed:?}"
    );
    assert_grpc_answer(response, "4", "context deadline exceeded").await;
    within("handler start", started.recv()).await.unwrap();
    let dropped_at = within("handler drop", dropped.recv()).await.unwrap();
    assert!(dropped_at >= begin + Duration::from_millis(150));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_answers_504_to_other_requests() {
    let (handler, _started, mut dropped) = hang();
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    let begin = Instant::now();
    let response = within(
        "response",
        http1_client().request(http_request(addr, Some("150"))),
    );
    let response = response.await.unwrap();
    assert!(begin.elapsed() >= Duration::from_millis(150));
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    within("handler drop", dropped.recv()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_requests_never_reach_the_handler() {
    let (handler, _started, _dropped) = hang();
    let calls = handler.calls.clone();
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    let response = within(
        "response",
        http2_client().request(grpc_request(addr, Some("0S"))),
    );
    assert_grpc_answer(response.await.unwrap(), "4", "context deadline exceeded").await;
    let response = within(
        "response",
        http1_client().request(http_request(addr, Some("0"))),
    );
    assert_eq!(
        response.await.unwrap().status(),
        StatusCode::GATEWAY_TIMEOUT
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_are_rejected_like_grpc_go() {
    let (handler, _started, _dropped) = hang();
    let calls = handler.calls.clone();
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    for malformed in ["1x", "-5S", "123456789n", " 1S", "1S1"] {
        let response = within(
            "response",
            http2_client().request(grpc_request(addr, Some(malformed))),
        );
        let response = response.await.unwrap();
        assert_grpc_answer(
            response,
            "13",
            "malformed grpc-timeout: invalid grpc-timeout value",
        )
        .await;
    }
    for malformed in ["1.5", "+3", "12345678901", "10ms"] {
        let response = within(
            "response",
            http1_client().request(http_request(addr, Some(malformed))),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = within("body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.starts_with("malformed connect-timeout-ms: "),
            "the answer says what was wrong: {body:?}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_headers_can_be_ignored_for_the_default() {
    let layer = ServerLayer::new()
        .default_timeout(Duration::from_millis(400))
        .on_malformed(MalformedTimeout::Ignore);
    let (addr, _) = serve(layer.layer(service_fn(report_budget))).await;
    let response = within(
        "response",
        http2_client().request(grpc_request(addr, Some("1x"))),
    );
    assert_budget(
        reported_budget(&response.await.unwrap()),
        Duration::from_millis(400),
    );
    let response = within(
        "response",
        http1_client().request(http_request(addr, Some("1.5"))),
    );
    assert_budget(
        reported_budget(&response.await.unwrap()),
        Duration::from_millis(400),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_cancels_in_flight_requests() {
    let (shutdown, stop) = Context::background().with_cancel();
    let (handler, mut started, mut dropped) = hang();
    let calls = handler.calls.clone();
    let (addr, _) = serve(ServerLayer::new().base(shutdown).layer(handler)).await;
    let grpc = tokio::spawn(http2_client().request(grpc_request(addr, Some("1M"))));
    let http = tokio::spawn(http1_client().request(http_request(addr, None)));
    for _ in 0..2 {
        within("handler start", started.recv()).await.unwrap();
    }
    stop.cancel();
    let grpc = within("gRPC response", grpc).await.unwrap().unwrap();
    assert_grpc_answer(grpc, "1", "context canceled").await;
    let http = within("HTTP response", http).await.unwrap().unwrap();
    assert_eq!(http.status(), StatusCode::SERVICE_UNAVAILABLE);
    for _ in 0..2 {
        within("handler drop", dropped.recv()).await.unwrap();
    }
    // After shutdown, requests are answered without reaching the handler.
    let response = within("response", http2_client().request(grpc_request(addr, None)));
    assert_grpc_answer(response.await.unwrap(), "1", "context canceled").await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A handler without our server layer: reports the timeout headers it got.
async fn echo_headers(request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let mut response = Response::builder();
    for (name, echo) in [
        (grpc_timeout::HEADER, GOT_GRPC),
        (grpc_timeout::CONNECT_HEADER, GOT_CONNECT),
    ] {
        if let Some(value) = request.headers().get(name) {
            response = response.header(echo, value);
        }
    }
    Ok(response.body(Body::default()).unwrap())
}

fn with_context(mut request: Request<Body>, ctx: &Context) -> Request<Body> {
    request.extensions_mut().insert(ctx.clone());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_writes_the_remaining_time() {
    let (addr, _) = serve(service_fn(echo_headers)).await;
    let budget = Duration::from_millis(800);
    let (ctx, _guard) = Context::background().with_timeout(budget);

    let client = ClientLayer::new().layer(http2_client());
    let response = within(
        "response",
        client.oneshot(with_context(grpc_request(addr, None), &ctx)),
    );
    let response = response.await.unwrap();
    assert!(!response.headers().contains_key(GOT_CONNECT));
    let sent = grpc_timeout::parse(header(&response, GOT_GRPC)).unwrap();
    assert_budget(Some(sent), budget);

    let client = ClientLayer::new().layer(http1_client());
    let response = within(
        "response",
        client.oneshot(with_context(http_request(addr, None), &ctx)),
    );
    let response = response.await.unwrap();
    assert!(!response.headers().contains_key(GOT_GRPC));
    let sent = grpc_timeout::parse_connect_timeout_ms(header(&response, GOT_CONNECT)).unwrap();
    assert_budget(Some(sent), budget);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_keeps_a_shorter_header_and_ignores_requests_without_context() {
    let (addr, _) = serve(service_fn(echo_headers)).await;
    let client = ClientLayer::new().layer(http2_client());
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_secs(10));

    // The caller's own, shorter header stays.
    let request = with_context(grpc_request(addr, Some("50m")), &ctx);
    let response = within("response", client.clone().oneshot(request))
        .await
        .unwrap();
    assert_eq!(header(&response, GOT_GRPC), "50m");

    // A longer one is replaced by the context's remaining time.
    let request = with_context(grpc_request(addr, Some("1H")), &ctx);
    let response = within("response", client.clone().oneshot(request))
        .await
        .unwrap();
    assert!(grpc_timeout::parse(header(&response, GOT_GRPC)).unwrap() <= Duration::from_secs(10));

    // No context, or a context without a deadline: no header.
    let response = within("response", client.clone().oneshot(grpc_request(addr, None))).await;
    assert!(!response.unwrap().headers().contains_key(GOT_GRPC));
    let (no_deadline, _guard) = Context::background().with_cancel();
    let request = with_context(grpc_request(addr, None), &no_deadline);
    let response = within("response", client.oneshot(request)).await.unwrap();
    assert!(!response.headers().contains_key(GOT_GRPC));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_fails_fast_without_sending() {
    let (addr, accepted) = serve(service_fn(echo_headers)).await;
    let client = ClientLayer::new().layer(http2_client());

    let (canceled, guard) = Context::background().with_cancel();
    guard.cancel();
    let (expired, _guard) = Context::background().with_timeout(Duration::ZERO);
    for (ctx, expected) in [
        (canceled, Error::Canceled),
        (expired, Error::DeadlineExceeded),
    ] {
        let error = client
            .clone()
            .oneshot(with_context(grpc_request(addr, None), &ctx))
            .await
            .unwrap_err();
        let ended = error
            .downcast_ref::<ContextEnded>()
            .expect("a ContextEnded");
        assert_eq!(ended.error(), expected);
        assert!(!ended.was_sent());
        assert!(
            error.to_string().starts_with("request not sent: context "),
            "{error}"
        );
    }
    // Nothing was sent: not even a connection was opened.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_layer_abandons_the_call_when_the_context_ends() {
    let (handler, mut started, mut dropped) = hang();
    let (addr, _) = serve(handler).await; // no server layer: the peer never answers
    let client = ClientLayer::new().layer(http2_client());
    let begin = Instant::now();
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(200));
    let call = client.oneshot(with_context(grpc_request(addr, None), &ctx));
    let error = within("client error", call).await.unwrap_err();
    assert!(begin.elapsed() >= Duration::from_millis(200));
    let ended = error
        .downcast_ref::<ContextEnded>()
        .expect("a ContextEnded");
    assert_eq!(
        (ended.error(), ended.was_sent()),
        (Error::DeadlineExceeded, true)
    );
    assert!(
        error.to_string().starts_with("request abandoned: "),
        "{error}"
    );
    // The peer saw the request, then the reset stream dropped its handler.
    within("handler start", started.recv()).await.unwrap();
    within("handler drop", dropped.recv()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_layers_carry_the_budget_end_to_end() {
    let (addr, _) = serve(ServerLayer::new().layer(service_fn(report_budget))).await;
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(900));
    let grpc = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(http2_client());
    let http = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(http1_client());
    // The budget shrinks from call to call; each hop never gets more than the
    // caller had left when sending (plus the encoding's rounding up: below
    // 1 µs for grpc-timeout here, below 1 ms for connect-timeout-ms).
    for _ in 0..3 {
        let before = ctx.remaining().unwrap();
        let request = with_context(grpc_request(addr, None), &ctx);
        let response = within("response", grpc.clone().oneshot(request))
            .await
            .unwrap();
        assert_budget(
            reported_budget(&response),
            before + Duration::from_micros(1),
        );

        let before = ctx.remaining().unwrap();
        let request = with_context(http_request(addr, None), &ctx);
        let response = within("response", http.clone().oneshot(request))
            .await
            .unwrap();
        assert_budget(
            reported_budget(&response),
            before + Duration::from_millis(1),
        );
    }
}

// ---------------------------------------------------------------------------
// The request's context and the connection: a client that leaves mid-body
// or mid-request ends it.

type OutBody = BoxBody<Bytes, Infallible>;

fn client(http2: bool) -> Client<HttpConnector, Body> {
    if http2 {
        http2_client()
    } else {
        http1_client()
    }
}

/// A handler that streams its response body from a task bound by the
/// request's context: a chunk every 20 ms until the context ends, then it
/// reports the context's error on `ended`. It is the usual shape of a
/// server-streaming RPC (tonic's handlers return the stream at once, and
/// the stream is fed by a task that watches the request's context).
fn streaming_handler(
    ended: mpsc::UnboundedSender<Error>,
) -> impl Service<
    Request<Incoming>,
    Response = Response<OutBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<OutBody>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |request: Request<Incoming>| {
        let ended = ended.clone();
        async move {
            let ctx = request
                .extensions()
                .get::<Context>()
                .expect("ServerLayer sets a Context")
                .clone();
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        error = ctx.done() => {
                            let _ = ended.send(error);
                            return;
                        }
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {
                            // A failed send (the body is gone) is ignored on
                            // purpose: the context is what must say so.
                            let _ = tx.try_send(Bytes::from_static(b"chunk\n"));
                        }
                    }
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
            });
            Ok::<_, Infallible>(Response::new(StreamBody::new(stream).boxed()))
        }
    })
}

/// Regression: once the head was sent the context was detached, so a client
/// that abandoned a streamed body never ended it.
async fn client_abandons_streamed_body(http2: bool) {
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    // A default timeout long enough not to matter here.
    let layer = ServerLayer::new().default_timeout(Duration::from_secs(60));
    let (addr, _) = serve(layer.layer(streaming_handler(ended_tx))).await;
    let request = Request::get(format!("http://{addr}/stream"))
        .body(Body::default())
        .unwrap();
    let client = client(http2);
    let response = within("response head", client.request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = within("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "chunk\n");
    // The client goes away mid-body: HTTP/2 resets the stream, HTTP/1
    // closes the connection (the body was not read to its end).
    drop(body);
    drop(client);
    let error = within(
        "the request's context ends once the client abandoned the body",
        ended.recv(),
    )
    .await
    .unwrap();
    assert_eq!(error, Error::Canceled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abandoning_a_streamed_body_cancels_the_request_context_http2() {
    client_abandons_streamed_body(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abandoning_a_streamed_body_cancels_the_request_context_http1() {
    client_abandons_streamed_body(false).await;
}

// ---------------------------------------------------------------------------
// A client that drops its request before the head.

/// Leak checks are process-wide: one at a time.
static LEAK_CHECKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn client_drops_request_in_flight(http2: bool) {
    let _serial = LEAK_CHECKS.lock().await;
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<Error>();
    let handler = service_fn(move |request: Request<Incoming>| {
        let ctx = request.extensions().get::<Context>().unwrap().clone();
        let (started, ended) = (started_tx.clone(), ended_tx.clone());
        async move {
            // Work the handler spawned with the request's context.
            tokio::spawn(async move {
                let error = ctx.done().await;
                let _ = ended.send(error);
            });
            let _ = started.send(());
            std::future::pending::<()>().await;
            Ok::<_, Infallible>(Response::new(Body::default()))
        }
    });
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    #[cfg(feature = "registry")]
    let leaks = cancelctx::registry::LeakCheck::start();
    let client = client(http2);
    let request = Request::get(format!("http://{addr}/hang"))
        .body(Body::default())
        .unwrap();
    let call = tokio::spawn(async move { client.request(request).await });
    within("handler start", started.recv()).await.unwrap();
    call.abort();
    let error = within("the request's context ends", ended.recv())
        .await
        .unwrap();
    assert_eq!(error, Error::Canceled);
    #[cfg(feature = "registry")]
    leaks.check_within(PATIENCE).unwrap_or_else(|live| {
        panic!("request contexts still alive after the client left:\n{live}")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_the_request_in_flight_cancels_and_frees_the_context_http2() {
    client_drops_request_in_flight(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_dropping_the_request_in_flight_cancels_and_frees_the_context_http1() {
    client_drops_request_in_flight(false).await;
}

// ---------------------------------------------------------------------------
// Answers compared with grpc-go.

/// Regression: answered with HTTP 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_timeout_is_answered_with_http_400_like_grpc_go() {
    let handler = service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Body::default()))
    });
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    let request = Request::post(format!("http://{addr}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(grpc_timeout::HEADER, "1x")
        .body(Body::default())
        .unwrap();
    let response = within("response", http2_client().request(request))
        .await
        .unwrap();
    // grpc-go (internal/transport/http2_server.go, operateHeaders): a
    // malformed grpc-timeout is an `earlyAbortStream{httpStatus:
    // http.StatusBadRequest, status: codes.Internal "malformed grpc-timeout:
    // ..."}`; its handler transport (handler_server.go) answers 400 too.
    assert_eq!(header(&response, "grpc-status"), "13");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{response:?}");
}

// ---------------------------------------------------------------------------
// Answers compared with connect-go.

/// Sends a Connect request with an expired `connect-timeout-ms` (`0`) and
/// returns the answer's status, content type and body.
async fn connect_answer(request: Request<Body>, http2: bool) -> (StatusCode, String, Bytes) {
    let handler = service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Body::default()))
    });
    let (addr, _) = serve(ServerLayer::new().layer(handler)).await;
    let (parts, body) = request.into_parts();
    let mut request = Request::from_parts(parts, body);
    *request.uri_mut() = format!("http://{addr}{}", request.uri()).parse().unwrap();
    let response = within("response", client(http2).request(request))
        .await
        .unwrap();
    let status = response.status();
    let content_type = header(&response, "content-type").to_owned();
    let body = within("body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    (status, content_type, body)
}

/// Regression: a Connect unary call whose deadline passed was answered with
/// a bare 504, which connect-go reads by its HTTP status: `unavailable` (a
/// code clients retry), not `deadline_exceeded`. connect-go reads a unary
/// error from a JSON body first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_unary_deadline_answer_is_a_connect_deadline_exceeded_error() {
    let request = Request::post("/pkg.Service/Method")
        .header("content-type", "application/proto")
        .header("connect-protocol-version", "1")
        .header(grpc_timeout::CONNECT_HEADER, "0")
        .body(Body::default())
        .unwrap();
    let (status, content_type, body) = connect_answer(request, false).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(content_type, "application/json");
    assert_eq!(
        body,
        r#"{"code":"deadline_exceeded","message":"context deadline exceeded"}"#
    );
    // A unary GET call says it is Connect in its query.
    let request = Request::get("/pkg.Service/Method?encoding=json&message=%7B%7D&connect=v1")
        .header(grpc_timeout::CONNECT_HEADER, "0")
        .body(Body::default())
        .unwrap();
    let (status, content_type, body) = connect_answer(request, false).await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "application/json")
    );
    assert!(
        body.starts_with(br#"{"code":"deadline_exceeded""#),
        "{body:?}"
    );
}

/// Regression: the same for a Connect streaming call, whose errors the
/// protocol carries in an end-of-stream message (envelope flag 0x02) of an
/// HTTP 200 answer in the call's own content type; connect-go's streaming
/// client turns any other status into `connectHTTPToCode` (504:
/// `unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_streaming_deadline_answer_is_an_end_stream_message() {
    let request = Request::post("/pkg.Service/Stream")
        .header("content-type", "application/connect+proto")
        .header("connect-protocol-version", "1")
        .header(grpc_timeout::CONNECT_HEADER, "0")
        .body(Body::default())
        .unwrap();
    let (status, content_type, body) = connect_answer(request, true).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "application/connect+proto");
    let message =
        br#"{"error":{"code":"deadline_exceeded","message":"context deadline exceeded"}}"#;
    assert_eq!(body[0], 0x02, "{body:?}");
    assert_eq!(body[1..5], (message.len() as u32).to_be_bytes());
    assert_eq!(&body[5..], &message[..]);
}

/// A malformed `connect-timeout-ms` on a Connect call: `invalid_argument`,
/// as connect-go answers, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_malformed_timeout_is_invalid_argument() {
    let request = Request::post("/pkg.Service/Method")
        .header("content-type", "application/json")
        .header("connect-protocol-version", "1")
        .header(grpc_timeout::CONNECT_HEADER, "-5")
        .body(Body::default())
        .unwrap();
    let (status, content_type, body) = connect_answer(request, false).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(content_type, "application/json");
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        body.starts_with(r#"{"code":"invalid_argument","message":"malformed connect-timeout-ms: "#),
        "{body}"
    );
}

/// A `101 Switching Protocols` answer: the upgraded connection's work runs
/// after the (empty) body is gone, with the request's context, which then
/// ends with its deadline rather than with the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_keeps_the_request_context_until_its_deadline() {
    let (ctx_tx, mut ctx_rx) = mpsc::unbounded_channel();
    let handler = service_fn(move |request: Request<Body>| {
        let ctx = request.extensions().get::<Context>().unwrap().clone();
        ctx_tx.send(ctx).unwrap();
        async {
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            Ok::<_, Infallible>(response)
        }
    });
    let service = ServerLayer::new().layer(handler);
    let request = Request::get("/socket")
        .header(grpc_timeout::CONNECT_HEADER, "200")
        .body(Body::default())
        .unwrap();
    let response = within("response", service.oneshot(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    drop(response);
    let ctx = ctx_rx.recv().await.unwrap();
    assert_eq!(ctx.err(), None, "the upgrade's work keeps the context");
    let ended = within("the request's deadline", ctx.done()).await;
    assert_eq!(ended, Error::DeadlineExceeded);

    // Any other answer: the context ends with its body.
    let handler = service_fn(|request: Request<Body>| {
        let ctx = request.extensions().get::<Context>().unwrap().clone();
        async move {
            let mut response = Response::new(Body::default());
            response.extensions_mut().insert(ctx);
            Ok::<_, Infallible>(response)
        }
    });
    let request = Request::get("/").body(Body::default()).unwrap();
    let response = ServerLayer::new()
        .layer(handler)
        .oneshot(request)
        .await
        .unwrap();
    let ctx = response.extensions().get::<Context>().unwrap().clone();
    assert_eq!(ctx.err(), None);
    drop(response);
    assert_eq!(ctx.err(), Some(Error::Canceled));
}
