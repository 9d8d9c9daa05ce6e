//! The load generator of the zero-downtime tests and benchmark: worker threads that send
//! `GET path` over HTTP/1.1 to one address, with a new connection per request or one kept-alive
//! connection per worker, and record every request: when it started and ended, how it ended, and
//! which server answered (the `X-Served-By` header the balancer adds).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::network::still_open;

/// How a worker uses connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connections {
    /// `Connection: close`: a new connection for every request.
    PerRequest,
    /// One connection per worker, reused for every request. A new one is opened only when the
    /// server closed the old one between requests, as any keep-alive client does.
    KeepAlive,
    /// As `KeepAlive`, but the next request goes out at once on the kept connection, without
    /// first looking whether the server has closed it, as wrk and many client pools do: a
    /// close right after a keep-alive answer is then a failed request, not a reconnect.
    KeepAliveUnchecked,
}

/// What the load is and how long it may run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where every request goes (the balancer).
    pub target: SocketAddr,
    /// The path requested.
    pub path: String,
    /// The body length a complete answer has.
    pub body_len: usize,
    /// How many requests are in flight at once: one per worker.
    pub workers: usize,
    /// New connection per request, or kept alive.
    pub connections: Connections,
    /// Upper bound on the run, should `Load::stop` never come.
    pub max_duration: Duration,
    /// Upper bound on the requests of one worker.
    pub max_requests: usize,
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Status 200 and the whole body.
    Ok,
    /// A complete answer with another status (HAProxy's 503 when no server took the request).
    Status(u16),
    /// The connection could not be made.
    ConnectFailed(io::ErrorKind),
    /// The connection broke before a whole response head came (reset, closed, timed out).
    Broken(io::ErrorKind),
    /// The head said 200 but the body ended early, or had the wrong length: the bytes received.
    ShortBody(usize),
}

/// One request as the client saw it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The worker that sent it.
    pub worker: usize,
    /// Before the connection was made or reused.
    pub start: Instant,
    /// After the last byte was read or the error seen.
    pub end: Instant,
    /// How it ended.
    pub outcome: Outcome,
    /// The `X-Served-By` header: the balancer's name for the server that answered.
    pub server: Option<String>,
    /// Whether it opened a connection (always, without keep-alive).
    pub new_connection: bool,
}

impl Record {
    /// Whether the request was under way at `instant`.
    pub fn in_flight_at(&self, instant: Instant) -> bool {
        self.start <= instant && instant <= self.end
    }

    /// Whether `server` answered it.
    pub fn served_by(&self, server: &str) -> bool {
        self.server.as_deref() == Some(server)
    }
}

/// Load running in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Vec<Record>>>,
}

impl Load {
    /// Starts `plan.workers` threads, each sending requests back to back.
    pub fn start(plan: Plan) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..plan.workers)
            .map(|worker| {
                let plan = plan.clone();
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || run_worker(worker, &plan, &stop))
            })
            .collect();
        Load { stop, workers }
    }

    /// Lets each worker finish its current request, and returns every record.
    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::SeqCst);
        let mut records: Vec<Record> = self
            .workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("load worker"))
            .collect();
        records.sort_by_key(|r| r.start);
        Report { records }
    }
}

/// Every request of one run, in the order they started.
pub struct Report {
    /// The records, sorted by start.
    pub records: Vec<Record>,
}

impl Report {
    /// The requests that did not end `Ok`.
    pub fn failures(&self) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.outcome != Outcome::Ok)
            .collect()
    }

    /// The requests under way at `instant`.
    pub fn in_flight_at(&self, instant: Instant) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|r| r.in_flight_at(instant))
            .collect()
    }

    /// Whether `server` answered a request that ended before `instant`.
    pub fn served_before(&self, server: &str, instant: Instant) -> bool {
        self.records
            .iter()
            .any(|r| r.served_by(server) && r.end < instant)
    }

    /// Whether `server` answered a request that started after `instant`.
    pub fn served_after(&self, server: &str, instant: Instant) -> bool {
        self.records
            .iter()
            .any(|r| r.served_by(server) && r.start > instant)
    }

    /// How many connections the workers opened.
    pub fn connections(&self) -> usize {
        self.records.iter().filter(|r| r.new_connection).count()
    }

    /// A few lines for a failed assertion: counts per server and outcome, then every failure
    /// with its times in ms relative to `zero` (e.g. the SIGTERM).
    pub fn summary(&self, zero: Instant) -> String {
        let mut per_server: Vec<(String, usize)> = Vec::new();
        for record in &self.records {
            let name = record.server.clone().unwrap_or_else(|| "-".into());
            match per_server.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => *count += 1,
                None => per_server.push((name, 1)),
            }
        }
        let failures = self.failures();
        let mut text = format!(
            "{} requests, {} failed, {} connections; per server: {per_server:?}\n",
            self.records.len(),
            failures.len(),
            self.connections()
        );
        let ms = |t: Instant| {
            if t >= zero {
                (t - zero).as_millis() as i64
            } else {
                -((zero - t).as_millis() as i64)
            }
        };
        for r in failures.iter().take(50) {
            text.push_str(&format!(
                "  worker {} {:>6}..{:>6} ms {:?} server {:?} new connection {}\n",
                r.worker,
                ms(r.start),
                ms(r.end),
                r.outcome,
                r.server,
                r.new_connection
            ));
        }
        text
    }
}

/// Requests back to back until stopped, out of time or out of count.
fn run_worker(worker: usize, plan: &Plan, stop: &AtomicBool) -> Vec<Record> {
    let deadline = Instant::now() + plan.max_duration;
    let mut records = Vec::new();
    let mut kept: Option<TcpStream> = None;
    for _ in 0..plan.max_requests {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        let start = Instant::now();
        // Checked before each reuse, so a close between requests costs a reconnect, not a
        // failure; only a close racing the request itself is a failure.
        let reused = match plan.connections {
            Connections::KeepAliveUnchecked => kept.take(),
            _ => kept.take().filter(still_open),
        };
        let new_connection = reused.is_none();
        let stream = match reused.map_or_else(|| connect(plan.target), Ok) {
            Ok(stream) => stream,
            Err(e) => {
                records.push(Record {
                    worker,
                    start,
                    end: Instant::now(),
                    outcome: Outcome::ConnectFailed(e.kind()),
                    server: None,
                    new_connection,
                });
                // A refused connect returns at once: pause so a dead target is not hammered.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let answer = exchange(stream, plan);
        records.push(Record {
            worker,
            start,
            end: Instant::now(),
            outcome: answer.outcome,
            server: answer.server,
            new_connection,
        });
        kept = answer.reusable;
    }
    records
}

fn connect(target: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What one request/response exchange gave.
struct Answer {
    outcome: Outcome,
    server: Option<String>,
    /// The connection, when it may carry the next request.
    reusable: Option<TcpStream>,
}

fn exchange(mut stream: TcpStream, plan: &Plan) -> Answer {
    let broken = |e: io::Error| Answer {
        outcome: Outcome::Broken(e.kind()),
        server: None,
        reusable: None,
    };
    let close = if plan.connections == Connections::PerRequest {
        "Connection: close\r\n"
    } else {
        ""
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\n{close}\r\n",
        plan.path, plan.target
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return broken(e);
    }
    let (head, mut body_read) = match read_head(&mut stream) {
        Ok(parts) => parts,
        Err(e) => return broken(e),
    };
    let mut complete = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(len) = head.content_length.filter(|len| body_read >= *len) {
            complete = body_read == len;
            break;
        }
        match stream.read(&mut buf) {
            // The end of a body without Content-Length; early for one with it.
            Ok(0) => {
                complete = head.content_length.is_none();
                break;
            }
            Ok(n) => body_read += n,
            Err(_) => break,
        }
    }
    let outcome = if head.status != 200 {
        Outcome::Status(head.status)
    } else if !complete || body_read != plan.body_len {
        Outcome::ShortBody(body_read)
    } else {
        Outcome::Ok
    };
    let keep = plan.connections != Connections::PerRequest
        && outcome == Outcome::Ok
        && head.content_length.is_some()
        && !head.close;
    Answer {
        outcome,
        server: head.server,
        reusable: keep.then_some(stream),
    }
}

/// The parts of a response head the load generator looks at.
struct Head {
    status: u16,
    content_length: Option<usize>,
    /// `Connection: close`: the server closes after this response.
    close: bool,
    server: Option<String>,
}

/// Reads up to the end of the head; returns it and how many body bytes came with it.
fn read_head(stream: &mut TcpStream) -> io::Result<(Head, usize)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if data.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&data[..end]);
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))?;
    let mut head = Head {
        status,
        content_length: None,
        close: false,
        server: None,
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => head.content_length = value.parse().ok(),
            "connection" => head.close = value.eq_ignore_ascii_case("close"),
            "x-served-by" => head.server = Some(value.to_owned()),
            _ => {}
        }
    }
    Ok((head, data.len() - end))
}
