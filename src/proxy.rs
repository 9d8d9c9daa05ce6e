//! The drain proxy (`--proxy LISTEN=APP`): lameduck takes the pod's traffic on LISTEN and
//! forwards it to the app on APP, so that during the drain it can move clients off gracefully,
//! which the app's own stop cannot: every HTTP/1.1 response then carries `Connection: close`,
//! every HTTP/2 connection gets GOAWAY, idle connections are closed between requests. This
//! module owns the routes, the drain switch and the tally of proxied connections that tells
//! the supervisor when nothing is left to move; `forward` (the `proxy` cargo feature) is the
//! HTTP machinery.

#[cfg(feature = "proxy")]
mod forward;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::settings::{Forwarded, Route};

/// The proxied connections, as `/status` and the drain's end see them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Connections open now, WebSockets and other upgraded streams included.
    pub open: usize,
    /// Connections accepted so far.
    pub accepted: u64,
    /// Connections closed since the drain began: clients moved off to other pods.
    pub moved_off: u64,
    /// When the drain began.
    pub drain_started: Option<Instant>,
    /// How long after the drain began the last connection closed.
    pub drained_after: Option<Duration>,
}

/// The running proxy, as the drain engine holds it.
pub struct Proxy {
    draining: watch::Sender<bool>,
    tally: watch::Sender<Tally>,
}

impl Proxy {
    /// Binds every route's listener (a taken port is a usage error) and starts forwarding.
    /// None without routes.
    pub fn start(routes: &[Route], forwarded: Forwarded) -> Result<Option<Proxy>, String> {
        if routes.is_empty() {
            return Ok(None);
        }
        let mut listeners = Vec::with_capacity(routes.len());
        for route in routes {
            let listener = crate::net::listen(route.listen)
                .map_err(|err| format!("cannot listen on {} for --proxy: {err}", route.listen))?;
            let addr = listener.local_addr().unwrap_or(route.listen);
            tracing::info!(listen = %addr, app = %route.app, "proxying to the app");
            listeners.push((listener, route.app));
        }
        let proxy = Proxy {
            draining: watch::Sender::new(false),
            tally: watch::Sender::new(Tally::default()),
        };
        proxy.serve(listeners, forwarded)?;
        Ok(Some(proxy))
    }

    #[cfg(feature = "proxy")]
    fn serve(
        &self,
        listeners: Vec<(TcpListener, SocketAddr)>,
        forwarded: Forwarded,
    ) -> Result<(), String> {
        let shared = forward::Shared::new(
            self.draining.subscribe(),
            self.tally.clone(),
            forwarded,
            listeners.len(),
        );
        for (listener, app) in listeners {
            tokio::spawn(forward::serve(
                listener,
                app,
                std::sync::Arc::clone(&shared),
            ));
        }
        Ok(())
    }

    #[cfg(not(feature = "proxy"))]
    fn serve(&self, _: Vec<(TcpListener, SocketAddr)>, _: Forwarded) -> Result<(), String> {
        Err("--proxy needs a lameduck built with the `proxy` feature".into())
    }

    /// Starts the drain: from now on connections are closed as soon as that is safe.
    pub fn drain(&self) {
        self.tally.send_modify(|tally| {
            tally.drain_started = Some(Instant::now());
            if tally.open == 0 {
                tally.drained_after = Some(Duration::ZERO);
            }
        });
        self.draining.send_replace(true);
    }

    /// The tally, live, for `/status`.
    pub fn tally(&self) -> watch::Receiver<Tally> {
        self.tally.subscribe()
    }

    /// Completes once no proxied connection is open, and not before `not_before`.
    pub async fn drained(&self, not_before: Instant) -> Tally {
        tokio::time::sleep_until(not_before).await;
        let mut tally = self.tally.subscribe();
        match tally.wait_for(|tally| tally.open == 0).await {
            Ok(tally) => *tally,
            Err(_) => std::future::pending().await,
        }
    }
}

/// Completes when the proxy has drained (see `Proxy::drained`), or never without a proxy or
/// before the drain.
pub async fn drained(
    proxy: Option<&Proxy>,
    drain_started: Option<Instant>,
    min_delay: Duration,
) -> Tally {
    match (proxy, drain_started) {
        (Some(proxy), Some(started)) => proxy.drained(started + min_delay).await,
        _ => std::future::pending().await,
    }
}
