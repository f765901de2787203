//! `cancelctx::tower` against tonic, over loopback (127.0.0.1, port 0):
//! a tonic client calling a server behind our `ServerLayer`, and our
//! `ClientLayer` calling a tonic server. No protoc: the messages are
//! hand-written prost messages, the services tonic's generic
//! `tonic::client::Grpc` and `tonic::server::Grpc` with `ProstCodec`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use cancelctx::tower::{ClientLayer, ContextEnded, ServerLayer};
use cancelctx::{Context, Error, grpc_timeout};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Generous bound on any wait: a loaded 2-core CI machine is slow, not stuck.
const PATIENCE: Duration = Duration::from_secs(5);

/// The request of both methods.
#[derive(Clone, PartialEq, prost::Message)]
struct Probe {
    #[prost(uint32, tag = "1")]
    id: u32,
}

/// What the server saw.
#[derive(Clone, PartialEq, prost::Message)]
struct Budget {
    /// The remaining time of the handler's `Context`, if it has a deadline.
    #[prost(uint64, optional, tag = "1")]
    remaining_us: Option<u64>,
    /// The `grpc-timeout` metadata the request carried, if any.
    #[prost(string, optional, tag = "2")]
    grpc_timeout: Option<String>,
}

const REPORT: &str = "/test.Budget/Report";
const HANG: &str = "/test.Budget/Hang";

/// A gRPC service with two unary methods: `Report` answers with what the
/// request brought, `Hang` sleeps for 10 s and reports on `dropped` when its
/// future is dropped.
#[derive(Clone)]
struct BudgetService {
    calls: Arc<AtomicUsize>,
    dropped: mpsc::UnboundedSender<Instant>,
}

impl NamedService for BudgetService {
    const NAME: &'static str = "test.Budget";
}

fn budget_service() -> (BudgetService, mpsc::UnboundedReceiver<Instant>) {
    let (dropped, dropped_rx) = mpsc::unbounded_channel();
    (
        BudgetService {
            calls: Arc::default(),
            dropped,
        },
        dropped_rx,
    )
}

struct DropReport(mpsc::UnboundedSender<Instant>);

impl Drop for DropReport {
    fn drop(&mut self) {
        let _ = self.0.send(Instant::now());
    }
}

async fn report(request: tonic::Request<Probe>) -> Result<tonic::Response<Budget>, Status> {
    let ctx = request.extensions().get::<Context>();
    let remaining = ctx.and_then(Context::remaining);
    let grpc_timeout = request.metadata().get(grpc_timeout::HEADER);
    Ok(tonic::Response::new(Budget {
        remaining_us: remaining.map(|remaining| remaining.as_micros() as u64),
        grpc_timeout: grpc_timeout.map(|value| value.to_str().unwrap().to_owned()),
    }))
}

impl<B> Service<http::Request<B>> for BudgetService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let dropped = self.dropped.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Budget, Probe>::default());
            Ok(match request.uri().path() {
                REPORT => grpc.unary(service_fn(report), request).await,
                HANG => {
                    let hang = service_fn(move |_: tonic::Request<Probe>| {
                        let report = DropReport(dropped.clone());
                        async move {
                            let _report = report;
                            tokio::time::sleep(Duration::from_secs(10)).await;
                            Ok::<_, Status>(tonic::Response::new(Budget::default()))
                        }
                    });
                    grpc.unary(hang, request).await
                }
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// Serves `service` with hyper on 127.0.0.1; ends with the test's runtime.
async fn serve_with_hyper<S, ResBody>(service: S) -> SocketAddr
where
    S: Service<http::Request<hyper::body::Incoming>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    ResBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// Serves `service` with tonic's own server on 127.0.0.1, with `layer`.
async fn serve_with_tonic<L, ResBody>(layer: L, service: BudgetService) -> SocketAddr
where
    L: Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    ResBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
    <L::Service as Service<http::Request<tonic::body::Body>>>::Future: Send,
    <L::Service as Service<http::Request<tonic::body::Body>>>::Error: Into<BoxError> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder().layer(layer).add_service(service);
    tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Endpoint::from_shared(format!("http://{addr}")).unwrap();
    within("connect", endpoint.connect()).await.unwrap()
}

/// Calls `method` through any gRPC transport.
async fn call<T>(
    transport: T,
    method: &'static str,
    request: tonic::Request<Probe>,
) -> Result<Budget, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: hyper::body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as hyper::body::Body>::Error: Into<BoxError> + Send,
{
    let mut grpc = tonic::client::Grpc::new(transport);
    grpc.ready()
        .await
        .map_err(|error| Status::from_error(error.into()))?;
    let path = http::uri::PathAndQuery::from_static(method);
    let codec = ProstCodec::<Probe, Budget>::default();
    Ok(grpc.unary(request, path, codec).await?.into_inner())
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {PATIENCE:?}"))
}

fn assert_budget(seen: Duration, sent: Duration) {
    assert!(seen <= sent, "saw {seen:?}, more than the {sent:?} sent");
    assert!(
        seen + Duration::from_millis(250) > sent,
        "saw {seen:?} of {sent:?}"
    );
}

fn with_timeout(timeout: Duration) -> tonic::Request<Probe> {
    let mut request = tonic::Request::new(Probe { id: 1 });
    request.set_timeout(timeout);
    request
}

fn with_context(ctx: &Context) -> tonic::Request<Probe> {
    let mut request = tonic::Request::new(Probe { id: 2 });
    request.extensions_mut().insert(ctx.clone());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_timeout_becomes_the_handler_context() {
    let (service, _) = budget_service();
    let layer = ServerLayer::new().max_timeout(Duration::from_secs(30));
    let addr = serve_with_tonic(layer, service).await;
    let channel = channel(addr).await;
    for sent in [Duration::from_millis(700), Duration::from_secs(2)] {
        let budget = within("call", call(channel.clone(), REPORT, with_timeout(sent)))
            .await
            .unwrap();
        let seen = Duration::from_micros(budget.remaining_us.expect("a deadline"));
        assert_budget(seen, sent);
    }
    // Without a timeout, the server's maximum applies.
    let request = tonic::Request::new(Probe { id: 3 });
    let budget = within("call", call(channel, REPORT, request))
        .await
        .unwrap();
    assert_budget(
        Duration::from_micros(budget.remaining_us.unwrap()),
        Duration::from_secs(30),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_gets_deadline_exceeded_from_our_layer() {
    // The server's maximum (200 ms) is shorter than the client's timeout
    // (5 s): our layer ends the call, and tonic's channel, which also times
    // calls out by their `grpc-timeout` (as CANCELLED), does not race it.
    // Served by hyper: tonic's own server would race it too.
    let (service, mut dropped) = budget_service();
    let layer = ServerLayer::new().max_timeout(Duration::from_millis(200));
    let addr = serve_with_hyper(layer.layer(service)).await;
    let begin = Instant::now();
    let result = within(
        "call",
        call(channel(addr).await, HANG, with_timeout(PATIENCE)),
    );
    let status = result.await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(status.message(), "context deadline exceeded");
    assert!(begin.elapsed() >= Duration::from_millis(200));
    let dropped_at = within("handler drop", dropped.recv()).await.unwrap();
    assert!(dropped_at >= begin + Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_layer_sends_the_context_deadline_to_tonic() {
    let (service, _) = budget_service();
    let addr = serve_with_tonic(tower::layer::util::Identity::new(), service).await;
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(channel(addr).await);
    let budget = Duration::from_millis(900);
    let (ctx, _guard) = Context::background().with_timeout(budget);
    let reply = within("call", call(client, REPORT, with_context(&ctx)))
        .await
        .unwrap();
    let sent = grpc_timeout::parse(&reply.grpc_timeout.expect("a grpc-timeout")).unwrap();
    assert_budget(sent, budget);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_server_applies_the_propagated_deadline() {
    let (service, mut dropped) = budget_service();
    let addr = serve_with_tonic(tower::layer::util::Identity::new(), service).await;

    // An HTTP/2 client that, unlike tonic's channel, neither times out nor
    // resets the stream when our layer gives up on it: the call runs on in a
    // task of its own and sends the peer's answer to `answers`. So whatever
    // ends the handler, and answers, is tonic's server applying the deadline
    // our layer sent.
    let (answers, mut answer) = mpsc::unbounded_channel();
    let peer = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let detached = service_fn(move |request: http::Request<Full<Bytes>>| {
        let (peer, answers) = (peer.clone(), answers.clone());
        tokio::spawn(async move {
            let response = peer.request(request).await.unwrap();
            let header = |name| response.headers()[name].to_str().unwrap().to_owned();
            let _ = answers.send((
                Instant::now(),
                header("grpc-status"),
                header("grpc-message"),
            ));
        });
        std::future::pending::<Result<http::Response<Full<Bytes>>, Infallible>>()
    });
    let client = ClientLayer::new().layer(detached);

    let begin = Instant::now();
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(250));
    let mut request = http::Request::post(format!("http://{addr}{HANG}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0]))) // one empty message
        .unwrap();
    request.extensions_mut().insert(ctx);
    let error = within("our layer", client.oneshot(request))
        .await
        .unwrap_err();
    let ended = error
        .downcast_ref::<ContextEnded>()
        .expect("a ContextEnded");
    assert_eq!(
        (ended.error(), ended.was_sent()),
        (Error::DeadlineExceeded, true)
    );

    let (answered_at, status, message) = within("tonic's answer", answer.recv()).await.unwrap();
    // tonic percent-encodes spaces too.
    let message = message.replace("%20", " ");
    assert_eq!(
        (status.as_str(), message.as_str()),
        ("1", "Timeout expired"),
        "tonic's CANCELLED"
    );
    assert!(answered_at >= begin + Duration::from_millis(250));
    let dropped_at = within("handler drop", dropped.recv()).await.unwrap();
    assert!(dropped_at >= begin + Duration::from_millis(250));
    assert!(
        dropped_at < begin + PATIENCE / 2,
        "{:?}",
        dropped_at - begin
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_layer_fails_fast_under_tonic() {
    let (service, _) = budget_service();
    let calls = service.calls.clone();
    let addr = serve_with_tonic(tower::layer::util::Identity::new(), service).await;
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(channel(addr).await);

    let (ctx, guard) = Context::background().with_cancel();
    guard.cancel();
    let status = within("call", call(client.clone(), REPORT, with_context(&ctx)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    assert_eq!(status.message(), "request not sent: context canceled");
    let source = std::error::Error::source(&status).expect("the ContextEnded");
    let ended = source
        .downcast_ref::<ContextEnded>()
        .expect("a ContextEnded");
    assert_eq!((ended.error(), ended.was_sent()), (Error::Canceled, false));
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // Still usable afterwards, and a live context goes through.
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_secs(5));
    let reply = within("call", call(client, REPORT, with_context(&ctx)))
        .await
        .unwrap();
    assert!(reply.grpc_timeout.is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_through_both_layers_with_tonic_on_each_side() {
    // tonic client -> our ClientLayer -> tonic channel -> our ServerLayer ->
    // tonic handler: the handler's budget is the caller's context's.
    let (service, _) = budget_service();
    let addr = serve_with_hyper(ServerLayer::new().layer(service)).await;
    let client = ServiceBuilder::new()
        .layer(ClientLayer::new())
        .service(channel(addr).await);
    let (ctx, _guard) = Context::background().with_timeout(Duration::from_millis(800));
    for _ in 0..3 {
        let before = ctx.remaining().unwrap();
        let reply = within("call", call(client.clone(), REPORT, with_context(&ctx)))
            .await
            .unwrap();
        let seen = Duration::from_micros(reply.remaining_us.expect("a deadline"));
        assert_budget(seen, before + Duration::from_micros(1));
    }
}
