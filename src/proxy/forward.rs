//! The proxy's HTTP side (hyper): accepts HTTP/1.1 and h2c on one port (told apart by the
//! HTTP/2 preface), forwards each request
//! to the app over HTTP/1.1 with bodies streamed both ways, passes upgrades (WebSocket) through
//! as raw byte streams, and at the drain shuts every connection down gracefully. The connections
//! to the app are a pool per route that every client shares, so an idle client holds none.
//! Bounded like the endpoints: a connection cap, a time limit on each request head, a size
//! limit on it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{Either, Full};
use hyper::body::{Body as _, Bytes, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{Forwarded, Tally};

/// At most this many client connections at once, or fewer if the open-file limit is low (see
/// `connection_cap`); beyond it new ones wait in the listen queue. Unlike the endpoints'
/// clients these are the app's users, so none is ever closed to make room. What the official
/// nginx image's config takes on a 32-core node (1,024 a worker, a worker a core); about
/// 400 MiB at some 12 KiB an idle connection.
const MAX_CONNECTIONS: usize = 32_768;
/// Descriptors left to the rest of lameduck (the endpoints, the ready check, the traffic watch)
/// when the open-file limit sets the cap.
const OWN_FILES: u64 = 64;
/// A client must send each request head within this time, counted from the end of the previous
/// response on a kept-alive connection: nginx's own keep-alive timeout, so the proxy closes idle
/// connections no sooner than the app behind it would.
const HEADER_TIMEOUT: Duration = Duration::from_secs(75);
/// Largest request head (HTTP/1.1) or header list (HTTP/2) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Requests one HTTP/2 connection may have in flight; each takes its own connection to the app.
const MAX_STREAMS: u32 = 128;
/// Idle connections to the app kept per route for the next request, like nginx's upstream
/// `keepalive`; past it the longest idle is closed. Busy connections are not counted: a busy
/// pod opens as many as it has requests in flight. One HTTP/2 client's full set of streams
/// finds its connections kept; each costs some 26 KiB while idle.
const MAX_IDLE_UPSTREAM: usize = MAX_STREAMS as usize;
/// The longest a connection to the app sits idle before the proxy stops reusing it: under the
/// shortest keep-alive timeouts apps ship with (gunicorn 2 s; Node.js, Apache and uvicorn 5 s),
/// so a request never goes out on a connection the app is just closing for idleness, which
/// would cost the client a 502.
const UPSTREAM_IDLE_LIMIT: Duration = Duration::from_secs(1);
/// How long an HTTP/1.1 connection that carries no request in the drain stays open: a client
/// that uses it within this time is moved off after its answer instead, without a race; one
/// that stays idle this long is unlikely to send just as it is closed.
const IDLE_GRACE: Duration = Duration::from_secs(1);
/// How long a connection to the app may take before the request gets a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the client gets: the app's body as it streams in, or lameduck's own short answer.
type Body = Either<FromApp, Full<Bytes>>;

/// What every proxied connection shares.
pub(super) struct Shared {
    draining: watch::Receiver<bool>,
    tally: watch::Sender<Tally>,
    forwarded: Forwarded,
    slots: Arc<Semaphore>,
}

impl Shared {
    pub(super) fn new(
        draining: watch::Receiver<bool>,
        tally: watch::Sender<Tally>,
        forwarded: Forwarded,
        routes: usize,
    ) -> Arc<Self> {
        let cap = connection_cap(routes);
        if cap < MAX_CONNECTIONS {
            tracing::info!(
                max_connections = cap,
                "the open-file limit caps the proxy's client connections"
            );
        }
        Arc::new(Shared {
            draining,
            tally,
            forwarded,
            slots: Arc::new(Semaphore::new(cap)),
        })
    }
}

/// `MAX_CONNECTIONS`, or as many as the open-file limit has room for at two descriptors each
/// (the client's, and one to the app while a request is in flight) beside each route's idle
/// pool and lameduck's own, so that a full proxy of HTTP/1.1 clients never fails an accept, a
/// connect to the app or a probe for want of descriptors.
fn connection_cap(routes: usize) -> usize {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(u64::MAX, |(soft, _)| soft);
    let pools = u64::try_from(MAX_IDLE_UPSTREAM * routes).unwrap_or(u64::MAX);
    let room = limit.saturating_sub(OWN_FILES).saturating_sub(pools) / 2;
    MAX_CONNECTIONS
        .min(usize::try_from(room).unwrap_or(usize::MAX))
        .max(1)
}

/// Accepts clients on `listener` for the app at `app` until the runtime shuts down.
pub(super) async fn serve(listener: TcpListener, app: SocketAddr, shared: Arc<Shared>) {
    let upstream = Arc::new(Upstream {
        app,
        idle: Mutex::default(),
        draining: shared.draining.clone(),
    });
    tokio::spawn(Arc::clone(&upstream).close_idle_in_drain());
    loop {
        let Ok(slot) = Arc::clone(&shared.slots).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors or similar: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let open = Arc::new(Open::new(shared.tally.clone(), slot));
        tokio::spawn(connection(
            stream,
            peer.ip(),
            Arc::clone(&upstream),
            Arc::clone(&shared),
            open,
        ));
    }
}

/// One client connection, counted in the tally from its accept until its last byte, an
/// upgraded stream's included.
struct Open {
    tally: watch::Sender<Tally>,
    _slot: OwnedSemaphorePermit,
}

impl Open {
    fn new(tally: watch::Sender<Tally>, slot: OwnedSemaphorePermit) -> Self {
        tally.send_modify(|tally| {
            tally.open += 1;
            tally.accepted += 1;
        });
        Open { tally, _slot: slot }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.tally.send_modify(|tally| {
            tally.open = tally.open.saturating_sub(1);
            if let Some(started) = tally.drain_started {
                tally.moved_off += 1;
                if tally.open == 0 {
                    tally.drained_after = Some(started.elapsed());
                }
            }
        });
    }
}

/// Serves one client until it leaves, or until the drain has closed its connection.
async fn connection(
    stream: TcpStream,
    client: IpAddr,
    upstream: Arc<Upstream>,
    shared: Arc<Shared>,
    open: Arc<Open>,
) {
    let mut draining = shared.draining.clone();
    let sniffed = tokio::select! {
        biased;
        sniffed = tokio::time::timeout(HEADER_TIMEOUT, speaks_h2(&stream)) => sniffed,
        () = idle_in_drain(&mut draining) => return,
    };
    let Ok(Some(h2)) = sniffed else { return };
    let hop = Hop {
        client,
        forwarded: shared.forwarded,
        // HTTP/2 has GOAWAY for that, and no `Connection` header.
        close_in_drain: (!h2).then(|| shared.draining.clone()),
        open,
    };
    let hop = Arc::new(hop);
    let service = hyper::service::service_fn(move |request| {
        // Boxed per request: hyper keeps room for the service's future for as long as the
        // connection is open, idle or not, and this one is over a kilobyte.
        let answer = Box::pin(forward(request, Arc::clone(&upstream), Arc::clone(&hop)));
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let io = TokioIo::new(stream);
    // Each protocol's state boxed on its own: the task then holds only the one it speaks.
    if h2 {
        Box::pin(async move {
            let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(MAX_STREAMS)
                .max_header_list_size(MAX_HEAD_BYTES as u32)
                .serve_connection(io, service);
            tokio::pin!(conn);
            tokio::select! {
                biased;
                _ = conn.as_mut() => return,
                _ = draining.wait_for(|draining| *draining) => {}
            }
            // GOAWAY: the streams already open, and any the client sent before it saw the
            // GOAWAY, finish; then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        })
        .await;
    } else {
        Box::pin(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(io, service)
                .with_upgrades();
            tokio::pin!(conn);
            // In the drain each response says `Connection: close` (see `forward`) and hyper
            // closes the connection after it: a busy connection leaves between two requests,
            // race-free.
            tokio::select! {
                biased;
                _ = conn.as_mut() => return,
                () = idle_in_drain(&mut draining) => {}
            }
            // Idle through the grace: closed now, unless a request has just begun, which is
            // answered first.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        })
        .await;
    }
}

/// Completes `IDLE_GRACE` after the drain began (at once if that has passed).
async fn idle_in_drain(draining: &mut watch::Receiver<bool>) {
    if draining.wait_for(|draining| *draining).await.is_err() {
        return;
    }
    tokio::time::sleep(IDLE_GRACE).await;
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4), which h2c clients open with.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client speaks HTTP/2 (the preface) or HTTP/1.1 (anything else), from the first
/// bytes it sent, left in the socket for hyper to read; None when it closes first.
async fn speaks_h2(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await.ok()?;
        if n == 0 {
            return None;
        }
        if first[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
        // Part of the preface: the rest is in flight.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What `forward` needs to know about the client's connection.
struct Hop {
    client: IpAddr,
    forwarded: Forwarded,
    /// For HTTP/1.1: the drain switch, which makes every response close the connection.
    close_in_drain: Option<watch::Receiver<bool>>,
    /// Held by an upgraded stream for as long as it lasts.
    open: Arc<Open>,
}

/// Forwards one request to the app and returns its answer, or a 502 when the app gives none.
async fn forward(
    mut request: Request<Incoming>,
    upstream: Arc<Upstream>,
    hop: Arc<Hop>,
) -> Response<Body> {
    let upgrade = wants_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
    to_app(&mut request, hop.client, hop.forwarded, upgrade.is_some());
    let (mut response, sender) = match upstream.send(request).await {
        Ok(answered) => answered,
        Err(err) => {
            tracing::warn!(app = %upstream.app, %err, "the app gave no answer; the client got 502 Bad Gateway");
            return bad_gateway();
        }
    };
    match upgrade {
        Some(client_side) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            let app_side = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_side, app_side, Arc::clone(&hop.open)));
            // The connection is the tunnel's now.
            return response.map(|body| Either::Left(FromApp::new(body, None)));
        }
        _ => strip_hop_by_hop(response.headers_mut()),
    }
    // Decided when the answer is ready, so a request that began before the drain still moves
    // its client off.
    if hop
        .close_in_drain
        .as_ref()
        .is_some_and(|draining| *draining.borrow())
    {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.map(|body| Either::Left(FromApp::new(body, Some((sender, upstream)))))
}

/// The app's body on its way to the client; the connection it came on goes back to the pool
/// once it has been read to the end, and is dropped (closed) with a body left unfinished.
struct FromApp {
    body: Incoming,
    ended: bool,
    give_back: Option<(SendRequest<Incoming>, Arc<Upstream>)>,
}

impl FromApp {
    fn new(body: Incoming, give_back: Option<(SendRequest<Incoming>, Arc<Upstream>)>) -> Self {
        FromApp {
            body,
            ended: false,
            give_back,
        }
    }
}

impl hyper::body::Body for FromApp {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for FromApp {
    fn drop(&mut self) {
        if let Some((sender, upstream)) = self.give_back.take()
            && (self.ended || self.body.is_end_stream())
        {
            upstream.keep(sender);
        }
    }
}

/// Turns the client's request into the app's: HTTP/1.1 in origin form with a `Host` (HTTP/2
/// carries it in the URI), without hop-by-hop headers (an upgrade's own kept), plus the
/// client's address when asked for.
fn to_app(request: &mut Request<Incoming>, client: IpAddr, forwarded: Forwarded, upgrade: bool) {
    if let Some(authority) = request.uri().authority().map(|a| a.as_str().to_owned()) {
        if !request.headers().contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(&authority)
        {
            request.headers_mut().insert(header::HOST, host);
        }
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = target.parse::<Uri>() {
            *request.uri_mut() = uri;
        }
    }
    *request.version_mut() = Version::HTTP_11;
    let protocol = request.headers().get(header::UPGRADE).cloned();
    let headers = request.headers_mut();
    strip_hop_by_hop(headers);
    if let (true, Some(protocol)) = (upgrade, protocol) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
    let (name, value) = match forwarded {
        Forwarded::None => return,
        Forwarded::XForwardedFor => (
            HeaderName::from_static("x-forwarded-for"),
            client.to_string(),
        ),
        Forwarded::Forwarded => (
            header::FORWARDED,
            match client {
                IpAddr::V4(ip) => format!("for={ip}"),
                IpAddr::V6(ip) => format!("for=\"[{ip}]\""),
            },
        ),
    };
    append(headers, name, &value);
}

/// Adds `value` to the list in header `name` (one line, comma-separated).
fn append(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let joined = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {value}"),
        None => value.to_owned(),
    };
    if let Ok(joined) = HeaderValue::from_str(&joined) {
        headers.insert(name, joined);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn wants_upgrade(request: &Request<Incoming>) -> bool {
    request.version() == Version::HTTP_11
        && request.headers().contains_key(header::UPGRADE)
        && connection_tokens(request.headers()).any(|token| token.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = String> + '_ {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty())
}

/// Removes the headers that describe one connection, not the message: each side's framing and
/// keep-alive are hyper's to set.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = connection_tokens(headers).collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

/// Copies an upgraded connection's bytes both ways until both sides have closed.
async fn tunnel(client_side: OnUpgrade, app_side: OnUpgrade, open: Arc<Open>) {
    let _open = open;
    let (Ok(client), Ok(app)) = tokio::join!(client_side, app_side) else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(app)).await;
}

fn bad_gateway() -> Response<Body> {
    let body = Full::new(Bytes::from_static(
        b"502 Bad Gateway: the app gave no answer\n",
    ));
    let mut response = Response::new(Either::Right(body));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The connections to the app for one route, shared by all its clients: a request takes an
/// idle one or opens one, and its answer's body gives it back once read to the end (`FromApp`).
/// In the drain none is kept: the idle ones close when it begins and each later one after its
/// answer, so the app's own stop finds no idle connection of the proxy's to close under a
/// request.
struct Upstream {
    app: SocketAddr,
    /// Oldest first, each with when it was given back. One just given back may need a moment
    /// before it takes a request: hyper readies it when it has seen the end of the answer.
    idle: Mutex<VecDeque<(SendRequest<Incoming>, Instant)>>,
    draining: watch::Receiver<bool>,
}

impl Upstream {
    /// Sends `request` on an idle connection, or on a new one; the answer comes with the
    /// connection, to give back.
    async fn send(
        &self,
        mut request: Request<Incoming>,
    ) -> Result<(Response<Incoming>, SendRequest<Incoming>), String> {
        while let Some(mut sender) = self.take_idle() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, sender)),
                // The app closed the idle connection before the request went out: it comes
                // back unsent, and goes on another.
                Err(mut err) => match err.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(err.into_error().to_string()),
                },
            }
        }
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| err.to_string())?;
        Ok((response, sender))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(SendRequest<Incoming>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently used idle connection that is ready: the least likely to be at the
    /// app's idle limit. Those the app closed, and those idle past `UPSTREAM_IDLE_LIMIT`, are
    /// dropped on the way. None in the drain, from the moment the app got its drain signal,
    /// which may have it close its idle connections.
    fn take_idle(&self) -> Option<SendRequest<Incoming>> {
        let mut idle = self.lock();
        if *self.draining.borrow() {
            return None;
        }
        idle.retain(|(sender, since)| !sender.is_closed() && since.elapsed() < UPSTREAM_IDLE_LIMIT);
        let ready = idle.iter().rposition(|(sender, _)| sender.is_ready())?;
        idle.remove(ready).map(|(sender, _)| sender)
    }

    fn keep(&self, sender: SendRequest<Incoming>) {
        let mut idle = self.lock();
        // Read under the lock that `close_idle_in_drain` takes after the switch flips.
        if *self.draining.borrow() {
            return;
        }
        if idle.len() == MAX_IDLE_UPSTREAM {
            idle.pop_front();
        }
        idle.push_back((sender, Instant::now()));
    }

    /// Closes every idle connection when the drain begins.
    async fn close_idle_in_drain(self: Arc<Self>) {
        let mut draining = self.draining.clone();
        if draining.wait_for(|draining| *draining).await.is_ok() {
            self.lock().clear();
        }
    }

    async fn connect(&self) -> Result<SendRequest<Incoming>, String> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.app))
            .await
            .map_err(|_| format!("no connection within {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|err| format!("cannot connect: {err}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| err.to_string())?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("content-length", "12"),
            ("x-end-to-end", "kept"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["content-length", "x-end-to-end"]);
    }

    #[test]
    fn a_forwarded_address_is_appended_to_the_clients_list() {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static("x-forwarded-for");
        append(&mut headers, name.clone(), "10.0.0.1");
        append(&mut headers, name.clone(), "10.0.0.2");
        assert_eq!(headers[&name], "10.0.0.1, 10.0.0.2");
    }
}
