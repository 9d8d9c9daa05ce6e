//! The HTTP endpoints (`/readyz`, `/livez`, `/prestop`, `/status`, `/metrics`): a small hyper
//! server that reads the supervisor's published snapshot and hands `/prestop` to the hooks.
//! It never signals anything itself, and is bounded so that no client can slow the drain or
//! break a held hook: `/prestop` refuses callers without credentials, and the connection cap
//! never closes a connection whose hook is held.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::exit::Fatal;
use crate::hooks::Hooks;
use crate::metrics::Metrics;
use crate::settings::{DrainConfig, HttpPrestop};
use crate::status::Snapshot;

/// At most this many connections are served at once, held hooks aside; beyond it the oldest is
/// closed, so abuse costs connections, not memory (each idle one holds a few KiB).
const MAX_CONNECTIONS: usize = 1024;
/// A client must send each request head within this time, the first one and each one on a
/// kept-alive connection alike: slow or idle clients cannot hold a slot for longer.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest request head accepted; no endpoint takes a body.
const MAX_HEAD_BYTES: usize = 8 * 1024;

/// What every request handler shares.
pub struct Endpoints {
    /// The supervisor's latest snapshot.
    pub status: watch::Receiver<Snapshot>,
    /// The drain settings, for `/status` and who may call `/prestop`.
    pub config: DrainConfig,
    /// Where `/prestop` starts the drain and waits for its answer.
    pub hooks: Hooks,
    /// The counters `/metrics` reports.
    pub metrics: Arc<Metrics>,
}

/// Connections the endpoints have accepted since lameduck started: the network namespace counts
/// them among its accepted connections, and the adaptive delay must not take them for the app's.
static ACCEPTED: AtomicU64 = AtomicU64::new(0);

/// How many connections the endpoints have accepted so far.
pub fn accepted() -> u64 {
    ACCEPTED.load(Ordering::Relaxed)
}

/// Accepts connections until the runtime shuts down.
pub async fn serve(listener: TcpListener, endpoints: Endpoints) {
    let endpoints = Arc::new(endpoints);
    let open = Open::default();
    let mut next_id: u64 = 0;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or similar: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
        let id = next_id;
        next_id += 1;
        open.make_room();
        let registration = Registration {
            open: open.clone(),
            id,
        };
        let endpoints = Arc::clone(&endpoints);
        let task = tokio::spawn(async move {
            let connection = Connection {
                open: registration.open.clone(),
                id,
            };
            let _registration = registration;
            let service = hyper::service::service_fn(move |request| {
                let endpoints = Arc::clone(&endpoints);
                let connection = connection.clone();
                async move { Ok::<_, Infallible>(route(&endpoints, &connection, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // The task cannot run before this: the runtime has one thread and we have not yielded.
        open.insert(id, task.abort_handle());
    }
}

/// The connections being served, by age, so that the oldest can make room for a new one. A
/// connection that carries a hook leaves the map: nothing can close it to make room.
#[derive(Clone, Default)]
struct Open(Arc<Mutex<BTreeMap<u64, AbortHandle>>>);

impl Open {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, AbortHandle>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// At the cap, closes the oldest connection. Probes come and go in milliseconds, so the
    /// oldest is the one idling or trickling its request: abuse loses its connections, and a
    /// new probe always gets in.
    fn make_room(&self) {
        let mut open = self.lock();
        if open.len() >= MAX_CONNECTIONS
            && let Some((_, oldest)) = open.pop_first()
        {
            oldest.abort();
        }
    }

    fn insert(&self, id: u64, task: AbortHandle) {
        self.lock().insert(id, task);
    }
}

/// One connection's place in `Open`, as its requests see it.
#[derive(Clone)]
struct Connection {
    open: Open,
    id: u64,
}

impl Connection {
    /// Takes the connection out of the cap's reach for the rest of its life: while its hook is
    /// held, and after, so that the answer is written before anything may close it. After the
    /// answer the header timeout still ends it once it idles.
    fn exempt(&self) {
        self.open.lock().remove(&self.id);
    }
}

/// Removes a connection from `Open` when its task ends, however it ends.
struct Registration {
    open: Open,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.open.lock().remove(&self.id);
    }
}

async fn route(
    endpoints: &Endpoints,
    connection: &Connection,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method();
    let readable = method == Method::GET || method == Method::HEAD;
    match request.uri().path() {
        "/readyz" if readable => readyz(&endpoints.status.borrow()),
        "/livez" if readable => text(StatusCode::OK, "ok\n"),
        "/status" if readable => json(endpoints.status.borrow().to_json(&endpoints.config)),
        "/metrics" if readable => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            endpoints.metrics.render(&endpoints.status.borrow()),
        ),
        "/prestop" if readable || method == Method::POST => match &endpoints.config.http_prestop {
            HttpPrestop::Refused => {
                tracing::warn!(
                    "refused an HTTP /prestop call: it needs --prestop-token (or --prestop-insecure); the in-pod hook is 'lameduck prestop'"
                );
                text(
                    StatusCode::FORBIDDEN,
                    "/prestop over HTTP is off: use the exec hook 'lameduck prestop', or start lameduck with --prestop-token\n",
                )
            }
            HttpPrestop::Token(token) if !bearer_matches(&token.0, authorization(&request)) => {
                tracing::warn!("refused a /prestop call without the right bearer token");
                text(StatusCode::UNAUTHORIZED, "a bearer token is required\n")
            }
            HttpPrestop::Token(_) | HttpPrestop::Anyone => {
                connection.exempt();
                let phase = endpoints.hooks.call("http").await;
                text(StatusCode::OK, &format!("{}\n", phase.name()))
            }
        },
        "/readyz" | "/livez" | "/status" | "/metrics" | "/prestop" => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// The request's `Authorization` header, if any.
fn authorization(request: &Request<Incoming>) -> Option<&[u8]> {
    request
        .headers()
        .get(AUTHORIZATION)
        .map(HeaderValue::as_bytes)
}

/// Whether an `Authorization` header value is `Bearer <token>`, compared in constant time.
fn bearer_matches(token: &str, header: Option<&[u8]>) -> bool {
    match header.and_then(|value| value.strip_prefix(b"Bearer ")) {
        Some(given) => bool::from(given.ct_eq(token.as_bytes())),
        None => false,
    }
}

fn readyz(snapshot: &Snapshot) -> Response<Full<Bytes>> {
    if snapshot.ready {
        text(StatusCode::OK, "ok\n")
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("{}\n", snapshot.phase.name()),
        )
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn json(body: String) -> Response<Full<Bytes>> {
    respond(StatusCode::OK, "application/json", body)
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Binds the endpoints' listener; a taken port is a configuration error.
pub fn bind(config: &DrainConfig) -> Result<TcpListener, Fatal> {
    let addr = config.listen;
    crate::net::listen(addr).map_err(|err| Fatal::usage(format!("cannot listen on {addr}: {err}")))
}

/// Logs where the endpoints listen, and who can start a drain; returns the port.
pub fn announce(listener: &TcpListener, config: &DrainConfig) -> u16 {
    let addr = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(%addr, "endpoints listening");
    match config.http_prestop {
        HttpPrestop::Anyone => {
            tracing::warn!(%addr, "--prestop-insecure: anyone who can reach this address can start a drain")
        }
        HttpPrestop::Refused => tracing::info!(
            "HTTP /prestop refuses calls (no --prestop-token); the hook is 'lameduck prestop'"
        ),
        HttpPrestop::Token(_) => {}
    }
    addr.port()
}

/// Binds the in-pod hook's socket, named after the endpoints' `port` unless
/// `--prestop-socket` names it; a taken name is a configuration error.
pub fn bind_prestop(config: &DrainConfig, port: u16) -> Result<UnixListener, Fatal> {
    let name = config.prestop_socket(port);
    let listener = crate::prestop::bind(&name).map_err(Fatal::usage)?;
    tracing::info!(socket = %format!("@{name}"), "preStop hook socket listening (exec: lameduck prestop)");
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_matches() {
        assert!(bearer_matches("s3cret", Some(b"Bearer s3cret")));
        for header in [
            None,
            Some(&b""[..]),
            Some(b"s3cret"),
            Some(b"Bearer s3cre"),
            Some(b"Bearer s3cret "),
            Some(b"bearer s3cret"),
        ] {
            assert!(!bearer_matches("s3cret", header), "{header:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn a_header_matches_only_its_own_token(token in "[!-~]{1,40}", header in proptest::collection::vec(proptest::num::u8::ANY, 0..60)) {
            let expected = header.strip_prefix(b"Bearer ") == Some(token.as_bytes());
            proptest::prop_assert_eq!(bearer_matches(&token, Some(&header)), expected);
        }
    }
}
