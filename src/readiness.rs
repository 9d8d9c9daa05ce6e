//! The app's own readiness: `--ready-check` URLs, one probe of them, and the polling task that
//! reports each change to the supervisor.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::phase::Event;

/// Where and how to ask the app whether it is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadyCheck {
    /// Ready once a TCP connection to `authority` (HOST:PORT) succeeds.
    Tcp {
        /// HOST:PORT to connect to.
        authority: String,
    },
    /// Ready once `GET path` on `authority` answers 2xx or 3xx.
    Http {
        /// HOST:PORT to connect to.
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
        let port_ok = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
        });
        if !port_ok || authority.chars().any(|c| c.is_whitespace() || c == '@') {
            return Err(format!("'{text}' needs a HOST:PORT; {usage}"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{text}' has a space or control character in its path"
            ));
        }
        let authority = authority.to_owned();
        match scheme {
            "tcp" if path.is_empty() || path == "/" => Ok(ReadyCheck::Tcp { authority }),
            "tcp" => Err(format!("'{text}': a tcp check takes no path; {usage}")),
            "http" => Ok(ReadyCheck::Http {
                authority,
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

impl fmt::Display for ReadyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadyCheck::Tcp { authority } => write!(f, "tcp://{authority}"),
            ReadyCheck::Http { authority, path } => write!(f, "http://{authority}{path}"),
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
            ReadyCheck::Tcp { authority } => TcpStream::connect(authority.as_str()).await.is_ok(),
            ReadyCheck::Http { authority, path } => http_status_ok(authority, path).await,
        }
    }
}

async fn http_status_ok(authority: &str, path: &str) -> bool {
    let Ok(stream) = TcpStream::connect(authority).await else {
        return false;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return false;
    };
    let connection = tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "lameduck-ready-check")
        .body(Empty::<Bytes>::new());
    let ready = match request {
        Ok(request) => sender.send_request(request).await.is_ok_and(|response| {
            response.status().is_success() || response.status().is_redirection()
        }),
        Err(_) => false,
    };
    connection.abort();
    ready
}

/// Polls `check` every `interval` and sends `Event::AppReady` whenever the answer changes,
/// starting with the first answer. Ends when the supervisor stops listening.
pub async fn poll(check: ReadyCheck, interval: Duration, events: mpsc::Sender<Event>) {
    let mut last = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
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
                authority: "127.0.0.1:8080".into()
            })
        );
        assert_eq!(
            "http://localhost:80/healthz?x=1".parse(),
            Ok(ReadyCheck::Http {
                authority: "localhost:80".into(),
                path: "/healthz?x=1".into()
            })
        );
        assert_eq!(
            "http://[::1]:80".parse(),
            Ok(ReadyCheck::Http {
                authority: "[::1]:80".into(),
                path: "/".into()
            })
        );
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
        ] {
            assert!(text.parse::<ReadyCheck>().is_err(), "{text}");
        }
    }
}
