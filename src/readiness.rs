//! The app's own readiness: `--ready-check` URLs, one probe of them, and the polling task that
//! reports each change to the supervisor.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::phase::{Event, Phase};
use crate::settings::ReadyCheck;
use crate::status::Snapshot;

impl ReadyCheck {
    /// Runs the check once; any error or a time-out counts as not ready.
    pub async fn probe(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.probe_inner())
            .await
            .unwrap_or(false)
    }

    async fn probe_inner(&self) -> bool {
        match self {
            ReadyCheck::Tcp { addr } => TcpStream::connect(addr).await.is_ok(),
            ReadyCheck::Http {
                addr,
                authority,
                path,
            } => http_status_ok(*addr, authority, path).await,
        }
    }
}

/// Sends `GET path` and reads just the status line (parsed by httparse, hyper's own parser):
/// a whole HTTP client would cost more binary than this one request is worth.
async fn http_status_ok(addr: SocketAddr, authority: &str, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: lameduck-ready-check\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => len += n,
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&buf[..len]);
        if let Some(code) = response.code {
            return (200..400).contains(&code);
        }
        if parsed.is_err() {
            return false;
        }
    }
    false
}

/// Polls `check` every `interval` and sends `Event::AppReady` whenever the answer changes,
/// starting with the first answer. Ends when the drain begins (the answer no longer matters,
/// and probes of the app's port would look like traffic to `--quiet-period`) or when the
/// supervisor stops listening.
pub async fn poll(
    check: ReadyCheck,
    interval: Duration,
    events: mpsc::Sender<Event>,
    mut status: watch::Receiver<Snapshot>,
) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = status.wait_for(|snapshot| snapshot.phase >= Phase::Draining) => return,
        }
        let ready = check.probe(interval.max(Duration::from_millis(100))).await;
        if last != Some(ready) {
            last = Some(ready);
            if events.send(Event::AppReady(ready)).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_http_checks() {
        assert_eq!(
            "tcp://127.0.0.1:8080".parse(),
            Ok(ReadyCheck::Tcp {
                addr: "127.0.0.1:8080".parse().unwrap()
            })
        );
        assert_eq!(
            "http://localhost:80/healthz?x=1".parse(),
            Ok(ReadyCheck::Http {
                addr: "127.0.0.1:80".parse().unwrap(),
                authority: "localhost:80".into(),
                path: "/healthz?x=1".into()
            })
        );
        assert_eq!(
            "http://[::1]:80".parse(),
            Ok(ReadyCheck::Http {
                addr: "[::1]:80".parse().unwrap(),
                authority: "[::1]:80".into(),
                path: "/".into()
            })
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_text(text in "\\PC{0,60}") {
            let _ = text.parse::<ReadyCheck>();
        }

        #[test]
        fn never_panics_on_url_shaped_text(text in "(tcp|http|x)://[a-z0-9.:\\[\\]]{0,30}(/\\PC{0,20})?") {
            if let Ok(check) = text.parse::<ReadyCheck>() {
                proptest::prop_assert_eq!(check.to_string().parse::<ReadyCheck>(), Ok(check));
            }
        }
    }

    #[test]
    fn rejects_malformed_checks() {
        for text in [
            "",
            "localhost:80",
            "udp://localhost:80",
            "tcp://localhost",
            "tcp://:80",
            "tcp://localhost:0",
            "tcp://localhost:99999",
            "tcp://localhost:80/path",
            "http://localhost:80/a b",
            "http://user@localhost:80/",
            "http://app.svc:80/",
        ] {
            assert!(text.parse::<ReadyCheck>().is_err(), "{text}");
        }
    }
}
