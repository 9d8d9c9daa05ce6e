//! The HTTPS server: TLS handshakes, HTTP/1.1 connections, routing, the bounds on a request, and
//! a graceful stop. Review paths answer AdmissionReviews; `/healthz`, `/readyz` and `/metrics`
//! are for the kubelet and Prometheus.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::admit::{self, Scope};
use super::metrics::{Metrics, Outcome};
use super::review::{self, MAX_BODY};
use crate::inject;

/// A client that has not finished its handshake or its request headers by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server gives up on a review after timeoutSeconds (at most 30); in-flight reviews get
/// this long to finish after the stop signal.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What every connection shares.
pub struct State {
    pub metrics: Metrics,
    pub options: inject::Options,
    /// Set on the stop signal: `/readyz` fails from then on.
    pub stopping: AtomicBool,
}

type Answer = Response<Full<Bytes>>;

/// Serves until `stop` resolves, then stops accepting, lets in-flight reviews finish (at most
/// [`STOP_TIMEOUT`]) and returns.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<State>,
    stop: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(request, &state, peer).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    state.stopping.store(true, Ordering::Relaxed);
    drop(listener);
    tracing::info!("stopping: no new connections; finishing the reviews in flight");
    if tokio::time::timeout(STOP_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("reviews still in flight after {STOP_TIMEOUT:?}; stopping anyway");
    }
}

/// Past this much, an oversized body is no longer read to its end: the connection is dropped.
const DISCARD_LIMIT: usize = 8 * MAX_BODY;

/// Reads a body of at most [`MAX_BODY`]. A larger one is read on and thrown away (up to
/// [`DISCARD_LIMIT`]) so that its client, still writing, gets to read the 400 that says why.
async fn read_body(mut body: Incoming) -> Result<Vec<u8>, String> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| format!("cannot read the body: {err}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= MAX_BODY {
            kept.extend_from_slice(&data);
        } else if seen > DISCARD_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(format!(
            "the body is larger than {} MiB",
            MAX_BODY / (1024 * 1024)
        ));
    }
    Ok(kept)
}

fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, line: &str) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{line}\n"))
}

async fn route(request: Request<Incoming>, state: &State, peer: SocketAddr) -> Answer {
    let scope = match request.uri().path() {
        "/mutate" => Scope::Namespace,
        "/mutate/annotated" => Scope::Annotated,
        "/healthz" if request.method() == Method::GET => return text(StatusCode::OK, "ok"),
        "/readyz" if request.method() == Method::GET => {
            return if state.stopping.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "stopping")
            } else {
                text(StatusCode::OK, "ready")
            };
        }
        "/metrics" if request.method() == Method::GET => {
            return answer(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                state.metrics.render(),
            );
        }
        "/healthz" | "/readyz" | "/metrics" => {
            return text(StatusCode::METHOD_NOT_ALLOWED, "only GET");
        }
        _ => return text(StatusCode::NOT_FOUND, "no such path"),
    };
    if request.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "reviews are POSTed");
    }
    let started = Instant::now();
    let (answer, outcome) = review(request, state, scope, peer).await;
    state
        .metrics
        .observe(outcome, started.elapsed().as_secs_f64());
    answer
}

/// Reads, decides and answers one review; a body that is not one is a 400 with one line.
async fn review(
    request: Request<Incoming>,
    state: &State,
    scope: Scope,
    peer: SocketAddr,
) -> (Answer, Outcome) {
    let bad = |line: String| {
        tracing::warn!(%peer, error = %line, "bad review");
        (text(StatusCode::BAD_REQUEST, &line), Outcome::BadRequest)
    };
    let body = match read_body(request.into_body()).await {
        Ok(body) => body,
        Err(line) => return bad(line),
    };
    let review = match review::parse(&body) {
        Ok(review) => review,
        Err(bad_review) => return bad(bad_review.0),
    };
    let decision = admit::admit(&review.request, scope, &state.options);
    let object = &review.request["object"]["metadata"];
    let pod = object["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| object["generateName"].as_str())
        .unwrap_or_default();
    let namespace = review.request["namespace"].as_str().unwrap_or_default();
    let outcome = decision.outcome.name();
    match decision.outcome {
        Outcome::Refused | Outcome::Error => tracing::warn!(
            uid = %review.uid, namespace, pod, outcome, reason = %decision.reason,
            "pod admitted unchanged"
        ),
        _ => tracing::info!(
            uid = %review.uid, namespace, pod, outcome, reason = %decision.reason,
            "review answered"
        ),
    }
    let body = review::response(&review.uid, decision.patch.as_deref(), &decision.warnings);
    match serde_json::to_vec(&body) {
        Ok(body) => (
            answer(StatusCode::OK, "application/json", body),
            decision.outcome,
        ),
        // Cannot happen for a Value of strings; still no panic, and still the uid.
        Err(err) => (
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("uid {}: cannot write the response: {err}", review.uid),
            ),
            Outcome::Error,
        ),
    }
}
