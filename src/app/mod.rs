//! The application interface: what a worker serves. Built-in apps and a user's own
//! embedded service both implement [`App`] (a tower service, an `axum::Router`, through
//! [`service_factory`]); an [`AppFactory`] builds the app inside each worker after the
//! fork, so its state (pools, caches) is never shared across processes.

pub(crate) mod body;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use body::BoxError;
/// The response body type apps return.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
/// A request as the app sees it. Its body is hyper's, wrapped so that forkd's limits
/// also hold for HTTP/2 streams (see [`RequestBody`]).
pub type Request = hyper::Request<RequestBody>;
pub use crate::app::body::RequestBody;
pub type Response = hyper::Response<Body>;
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The client's address, in every request's extensions: the peer's `IP:PORT` (`unix`
/// for unix sockets), or, when the peer is a proxy listed in `forwarded_allow_ips`, the
/// client's IP as the proxy reported it in `Forwarded` or `X-Forwarded-For`; `unknown`
/// when the proxy's headers name no usable address for it (a malformed entry,
/// `unknown`, an obfuscated name): never the proxy's own address then.
///
/// An `Arc<str>` (it derefs to `&str`), made once per connection and shared by its
/// requests, so that a request costs no copy of it.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub std::sync::Arc<str>);

/// The local address the request arrived on (TCP listeners only): the ASGI `server`.
#[derive(Debug, Clone, Copy)]
pub struct ServerAddr(pub std::net::SocketAddr);

/// `http` or `https` as a trusted proxy reported it (`Forwarded: proto=` or
/// `X-Forwarded-Proto`), else `https` on a `tls://` listener; absent when neither
/// says, which means `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheme(pub &'static str);

/// The subject of the certificate the client presented on a TLS connection
/// (`tls.client_auth = "optional"` or `"required"`), verified against `tls.ca_certs`,
/// as RFC 4514 text, escaped as nginx's `$ssl_client_s_dn` (`CN=alice,O=Example`; at
/// most 4096 bytes, never a control character). Absent without a client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertSubject(pub String);

/// The host name a TLS client asked for with SNI, on a TLS connection that sent one.
/// forkd serves one certificate whatever it is; the app may route or check on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsServerName(pub std::sync::Arc<str>);

/// A request handler. Implemented for any `Fn(Request) -> impl Future<Output = Response>`.
pub trait App: Send + Sync + 'static {
    fn call(&self, req: Request) -> BoxFuture<Response>;

    /// Called once when a draining worker's `graceful_timeout` is nearly over and
    /// connections are still open: connections the app took over (WebSockets, after a
    /// 101) should be closed now, cleanly. They count as open until they are dropped,
    /// so the drain waits for them up to `graceful_timeout`.
    fn closing(&self) {}

    /// Called once when the worker starts draining (TERM, a HUP or USR2 retiring it,
    /// recycling), on the server's runtime: connections the app took over may be told
    /// now that the worker is going (the Python mode closes WebSockets with 1012).
    fn draining(&self) {}
}

impl<F, Fut> App for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<Response> {
        Box::pin(self(req))
    }
}

/// Builds a worker's app after the fork, inside the worker's runtime. An error (or a
/// panic) is a boot failure: the worker exits and the master retries with backoff.
pub type AppFactory = Arc<dyn Fn() -> BoxFuture<Result<Arc<dyn App>, BoxError>> + Send + Sync>;

/// Wraps an async constructor into an [`AppFactory`].
pub fn factory<F, Fut, A>(make: F) -> AppFactory
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, BoxError>> + Send + 'static,
    A: App,
{
    Arc::new(move || {
        let fut = make();
        Box::pin(async move { fut.await.map(|app| Arc::new(app) as Arc<dyn App>) })
    })
}

/// Wraps an async constructor of a tower service (an `axum::Router` as it is) into an
/// [`AppFactory`]: `make` runs in each worker after the fork, as for [`factory`].
///
/// The service takes forkd's [`Request`] (whose body, [`RequestBody`], is an
/// `http_body::Body` with `Bytes` data) and answers with any `http_body::Body` of
/// `Bytes`. Each request is served by a clone of the service, made ready first, as
/// tower's contract asks; a service that fails (its `poll_ready` or its future returns
/// an error) gets a 500 and a log line. The service must be `Sync`, since the worker's
/// threads share it: tower's `BoxCloneSyncService` is, `BoxCloneService` is not.
pub fn service_factory<F, Fut, S>(make: F) -> AppFactory
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, BoxError>> + Send + 'static,
    S: TowerService,
{
    Arc::new(move || {
        let fut = make();
        Box::pin(async move { fut.await.map(from_service) })
    })
}

/// A tower service (an `axum::Router` as it is) as an [`App`], for
/// [`serve`](crate::serve::serve): served as by [`service_factory`].
pub fn from_service<S: TowerService>(svc: S) -> Arc<dyn App> {
    Arc::new(ServiceApp(svc))
}

/// The tower services forkd serves: a `tower_service::Service` of [`Request`] that is
/// `Clone + Send + Sync`, with a `Send` future, an error that converts to [`BoxError`],
/// and a response body that is any `http_body::Body` of `Bytes`. Every such service
/// implements it (a blanket impl); it only names those bounds once.
pub trait TowerService:
    tower_service::Service<
        Request,
        Response = hyper::Response<Self::Body>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The response body.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
}

impl<S, B> TowerService for S
where
    S: tower_service::Service<Request, Response = hyper::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Body = B;
}

/// A tower service as an [`App`].
struct ServiceApp<S>(S);

impl<S: TowerService> App for ServiceApp<S> {
    fn call(&self, req: Request) -> BoxFuture<Response> {
        // The clone is this request's own: its readiness is not another request's.
        let mut svc = self.0.clone();
        Box::pin(async move {
            // Errors become `BoxError` at once: the service's own need not be `Send`.
            let ready: Result<(), BoxError> = std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into);
            let answered = match ready {
                Ok(()) => svc.call(req).await.map_err(Into::into),
                Err(e) => Err(e),
            };
            match answered {
                Ok(resp) => resp.map(into_body),
                Err(e) => {
                    tracing::error!(pid = std::process::id(), "the service failed: {e}");
                    respond(500, "text/plain", "internal server error\n")
                }
            }
        })
    }
}

/// A service's response body as forkd's [`Body`]: boxed, unless it is one already.
fn into_body<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut slot = Some(body);
    if let Some(ours) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<Body>>() {
        if let Some(body) = ours.take() {
            return body;
        }
    }
    match slot {
        Some(body) => body.map_err(Into::into).boxed_unsync(),
        None => full(Bytes::new()),
    }
}

/// A complete body from bytes or a string.
pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with a status, content type and body.
pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    resp
}
