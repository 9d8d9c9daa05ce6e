//! Validated settings and the value parsers of lameduck's flags: what the rest of lameduck
//! runs on. A leaf: it knows nothing of clap (`cli` turns flags into these) nor of the engine.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;

/// How long before the kubelet's SIGKILL lameduck's own final kill must come.
pub const GRACE_MARGIN: Duration = Duration::from_secs(2);

/// A secret that never shows in logs or debug output.
#[derive(Clone)]
pub struct Token(pub String);

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the token must be non-empty, without spaces or control characters".into());
        }
        Ok(Token(text.to_owned()))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

/// The adaptive delay after validation.
#[derive(Clone, Debug)]
pub struct QuietConfig {
    /// How long without traffic (a new connection or bytes on one) counts as quiet.
    pub period: Duration,
    /// The earliest the stop signal may go out after the drain began.
    pub min_delay: Duration,
    /// Ports to watch; empty means the ports the app listens on.
    pub app_ports: Vec<u16>,
}

/// What `/readyz` answers while the shutdown delay runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadinessDuringDelay {
    /// Fail at once: load balancers that health-check the pod stop sending traffic.
    Fail,
    /// Keep passing until the stop signal: kube-proxy may still fall back to this endpoint.
    Pass,
}

/// The drain settings after validation.
#[derive(Clone, Debug)]
pub struct DrainConfig {
    /// Where the endpoints listen.
    pub listen: SocketAddr,
    /// Time between the start of the drain and the stop signal.
    pub shutdown_delay: Duration,
    /// Time the app has to exit after its stop signal.
    pub drain_timeout: Duration,
    /// The signal that asks the app to stop.
    pub stop_signal: Signal,
    /// What /readyz answers during the shutdown delay.
    pub readiness_during_delay: ReadinessDuringDelay,
    /// With a grace period: the time after the start of the drain (preStop included) at which
    /// lameduck kills what is left, whatever the drain timeout says, a fixed margin before the
    /// kubelet's SIGKILL.
    pub kill_budget: Option<Duration>,
    /// Who may start a drain over HTTP `/prestop`.
    pub http_prestop: HttpPrestop,
    /// The in-pod hook's socket name from `--prestop-socket`; without it, named after the port.
    pub prestop_socket: Option<String>,
    /// The drain proxy's routes (none without `--proxy`).
    pub proxy: Vec<Route>,
    /// The header the proxy passes the client's address in.
    pub proxy_forwarded: Forwarded,
    /// With the adaptive delay or the proxy: the earliest the stop signal may go out.
    pub min_delay: Duration,
    /// The signal the app gets when the drain starts, if any.
    pub drain_signal: Option<Signal>,
}

/// One `--proxy LISTEN=APP`: where lameduck accepts the pod's traffic, and where the app is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where clients connect (the Service's `targetPort`).
    pub listen: SocketAddr,
    /// The app's own address, normally on loopback.
    pub app: SocketAddr,
}

impl FromStr for Route {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (listen, app) = text.split_once('=').ok_or_else(|| {
            format!("expected LISTEN=APP (e.g. 0.0.0.0:80=127.0.0.1:8080), got {text:?}")
        })?;
        let address = |part: &str| {
            part.trim()
                .parse::<SocketAddr>()
                .map_err(|_| format!("{part:?} is not an IP:PORT address"))
        };
        let route = Route {
            listen: address(listen)?,
            app: address(app)?,
        };
        if route.app.port() == 0 {
            return Err(format!("the app's port in {text:?} cannot be 0"));
        }
        Ok(route)
    }
}

/// Which header tells the app the client's address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Forwarded {
    /// None: the app sees lameduck's loopback address.
    #[default]
    None,
    /// `X-Forwarded-For: CLIENT` (appended to one the client sent).
    XForwardedFor,
    /// `Forwarded: for=CLIENT` (RFC 7239, appended to one the client sent).
    Forwarded,
}

impl DrainConfig {
    /// The in-pod hook's socket name, for endpoints bound to `port`.
    pub fn prestop_socket(&self, port: u16) -> String {
        prestop_socket_name(self.prestop_socket.as_deref(), port)
    }
}

/// The hook socket's name: as given, or `lameduck-prestop-PORT` after the endpoints' port, so
/// that each lameduck of a network namespace has its own.
pub fn prestop_socket_name(given: Option<&str>, port: u16) -> String {
    given.map_or_else(|| format!("lameduck-prestop-{port}"), str::to_owned)
}

/// Who may start a drain through HTTP `/prestop`.
#[derive(Clone, Debug)]
pub enum HttpPrestop {
    /// Nobody: the call is refused (the in-pod hook is the way), the default.
    Refused,
    /// Callers sending `Authorization: Bearer <token>`.
    Token(Token),
    /// Anyone who reaches the port (`--prestop-insecure`).
    Anyone,
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_is_listen_equals_app() {
        let route: Route = "0.0.0.0:80=127.0.0.1:8080".parse().unwrap();
        assert_eq!(route.listen, "0.0.0.0:80".parse().unwrap());
        assert_eq!(route.app, "127.0.0.1:8080".parse().unwrap());
        let v6: Route = "[::]:80=[::1]:8080".parse().unwrap();
        assert_eq!(v6.app, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn a_bad_route_says_what_is_wrong() {
        for (text, expected) in [
            ("127.0.0.1:8080", "expected LISTEN=APP"),
            ("80=127.0.0.1:8080", "\"80\" is not an IP:PORT"),
            (
                "0.0.0.0:80=localhost:8080",
                "\"localhost:8080\" is not an IP:PORT",
            ),
            ("0.0.0.0:80=127.0.0.1:0", "cannot be 0"),
        ] {
            let err = text.parse::<Route>().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
