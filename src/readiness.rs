//! The app's own readiness: `--ready-check` URLs, one probe of them, and the polling task that
//! reports each change to the supervisor.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::phase::{Event, Phase};
use crate::status::Snapshot;

/// Where and how to ask the app whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyCheck {
    /// Ready once a TCP connection to `addr` succeeds.
    Tcp {
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Ready once `GET path` on `addr` answers 2xx or 3xx.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The HOST:PORT as written, sent as the Host header.
        authority: String,
        /// Path and query, starting with `/`.
        path: String,
    },
}

impl FromStr for ReadyCheck {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let usage = "write it as tcp://HOST:PORT or http://HOST:PORT/PATH";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("'{text}' is not a URL; {usage}"))?;
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, ""),
        };
        let addr = socket_addr(authority).ok_or_else(|| {
            format!("'{text}' needs an IP address or localhost and a port, e.g. 127.0.0.1:8080 (lameduck does not resolve host names: it runs in images without a resolver)")
        })?;
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{text}' has a space or control character in its path"
            ));
        }
        match scheme {
            "tcp" if path.is_empty() || path == "/" => Ok(ReadyCheck::Tcp { addr }),
            "tcp" => Err(format!("'{text}': a tcp check takes no path; {usage}")),
            "http" => Ok(ReadyCheck::Http {
                addr,
                authority: authority.to_owned(),
                path: if path.is_empty() {
                    "/".into()
                } else {
                    path.into()
                },
            }),
            _ => Err(format!("'{text}' has scheme '{scheme}'; {usage}")),
        }
    }
}

/// `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT`, with a port other than 0.
fn socket_addr(authority: &str) -> Option<SocketAddr> {
    let addr = match authority.strip_prefix("localhost:") {
        Some(port) => SocketAddr::from(([127, 0, 0, 1], port.parse().ok()?)),
        None => authority.parse().ok()?,
    };
    (addr.port() != 0).then_some(addr)
}

impl fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyCheck::Tcp { addr } => write!(f, "tcp://{addr}"),
            ReadyCheck::Http {
                authority, path, ..
            } => write!(f, "http://{authority}{path}"),
        }
    }
}

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
