//! The app's traffic as the kernel sees it, through sock_diag netlink (what `ss` uses): which
//! TCP ports the app listens on, and when traffic last reached them — a new connection, or
//! bytes received on one. The adaptive shutdown delay (`--quiet-period`) stops waiting once
//! nothing has arrived for its quiet period.
//!
//! The watch costs little however many connections the app holds: the kernel filters the dump
//! down to the app's ports, each socket's `tcp_info` says how long ago it last received data
//! (or, with no data yet, was established), so one look gives the time of the last arrival
//! without comparing anything to an earlier look, and a look is made only when its answer can
//! end the wait, or at least every `MAX_GAP`. What it keeps per connection is one cookie.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// `SOCK_DIAG_BY_FAMILY` from linux/sock_diag.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_REQ_BYTECODE`: the request attribute carrying a filter program.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// Filter operations, as linux/inet_diag.h numbers them.
const BC_JMP: u8 = 1;
const BC_S_GE: u8 = 2;
const BC_S_LE: u8 = 3;
/// Bytes of the filter per port: `sport >= p`, `sport <= p` (8 bytes each), accept (4).
const PORT_TEST: usize = 20;
/// Past this many ports the filter runs in lameduck instead (the kernel's jumps are 16 bits).
const MAX_FILTERED_PORTS: usize = 1024;
/// TCP states, as linux/tcp_states.h numbers them.
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
/// Every TCP state (1..=12) but LISTEN.
const ALL_BUT_LISTEN: u32 = 0x1ffe & !(1 << TCP_LISTEN);
/// The longest the watch goes without looking while no answer is due: the open-connection
/// count stays this fresh, and a connection that lives this long cannot pass unseen.
const MAX_GAP: Duration = Duration::from_millis(1000);

/// `struct inet_diag_sockid`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockId {
    sport: [u8; 2],
    dport: [u8; 2],
    src: [u32; 4],
    dst: [u32; 4],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2` behind its netlink header.
#[repr(C)]
#[derive(Clone, Copy)]
struct Request {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// The fixed part of `struct inet_diag_msg`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Message {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// One TCP socket as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Socket {
    local_port: u16,
    state: u8,
    inode: u32,
    /// The kernel's unique id of the socket, kept across TIME_WAIT.
    cookie: u64,
    /// Milliseconds since the socket last received data, or since it was established when it
    /// has received none (`tcpi_last_data_recv`); `None` without tcp_info (SYN_RECV and
    /// TIME_WAIT sockets, or a dump that did not ask for it).
    idle_ms: Option<u32>,
}

/// Watches the traffic to a set of ports during a drain.
pub struct TrafficWatch {
    /// Sorted, without duplicates.
    ports: Vec<u16>,
    /// How long without traffic ends the wait.
    period: Duration,
    /// Before this (the minimum delay) a quiet answer ends nothing, so it need not be asked.
    earliest: Instant,
    /// The dump request for one address family, the port filter included.
    request: Vec<u8>,
    /// Cookies of the sockets the last look found, sorted: 8 bytes per connection.
    seen: Vec<u64>,
    /// The next look's cookies, kept to reuse its memory.
    next: Vec<u64>,
    /// When traffic last arrived, as far as the looks tell; the watch's start at the earliest.
    last_arrival: Instant,
    last_look: Instant,
    /// Connections established at the last look.
    open: usize,
}

/// What the watch knows after one tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Connections the look on this tick found that the previous look had not (0 without one).
    pub new_connections: usize,
    /// Connections established at the last look.
    pub open: usize,
    /// How long before the last look traffic last arrived (at most since the watch began).
    pub quiet_for: Duration,
}

impl TrafficWatch {
    /// Starts watching `ports` for a drain that may end once they have been quiet for
    /// `period`, and not before `min_delay` from now; what exists now is the baseline.
    pub fn new(mut ports: Vec<u16>, period: Duration, min_delay: Duration) -> Self {
        ports.sort_unstable();
        ports.dedup();
        let now = Instant::now();
        let mut watch = TrafficWatch {
            request: request(&ports),
            ports,
            period,
            earliest: now + min_delay,
            seen: Vec::new(),
            next: Vec::new(),
            last_arrival: now,
            last_look: now,
            open: 0,
        };
        watch.look();
        watch
    }

    /// The ports watched.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// One tick: looks at the sockets when the answer may end the wait (the quiet period since
    /// the last known arrival is over, and so is the minimum delay) or `MAX_GAP` has passed
    /// since the last look, and reports what the last look found.
    pub fn poll(&mut self) -> Activity {
        let now = Instant::now();
        let answer_due = (self.last_arrival + self.period).max(self.earliest);
        let new_connections = if now >= answer_due || now >= self.last_look + MAX_GAP {
            self.look()
        } else {
            0
        };
        Activity {
            new_connections,
            open: self.open,
            quiet_for: self.last_look.saturating_duration_since(self.last_arrival),
        }
    }

    /// Dumps the sockets on the watched ports, moves `last_arrival` up to the latest traffic
    /// they show, and returns how many were not there on the previous look. A failed dump
    /// counts as traffic now, so that an error can only make lameduck wait longer.
    fn look(&mut self) -> usize {
        self.next.clear();
        let (mut latest, mut open, mut new) = (None, 0, 0);
        let (ports, seen, next) = (&self.ports, &self.seen, &mut self.next);
        let filtered = ports.len() <= MAX_FILTERED_PORTS;
        let dumped = ports.is_empty()
            || each_socket(&self.request, |socket| {
                if !filtered && ports.binary_search(&socket.local_port).is_err() {
                    return;
                }
                next.push(socket.cookie);
                let is_new = seen.binary_search(&socket.cookie).is_err();
                new += usize::from(is_new);
                open += usize::from(socket.state == TCP_ESTABLISHED);
                // Without tcp_info, a socket born since the last look (a handshake under way,
                // or a connection that already ended) counts as traffic now; an older one
                // received nothing the earlier looks did not see.
                let idle = match socket.idle_ms {
                    Some(ms) => Duration::from_millis(ms.into()),
                    None if is_new => Duration::ZERO,
                    None => return,
                };
                latest = Some(latest.map_or(idle, |l: Duration| l.min(idle)));
            })
            .is_ok();
        // Taken after the dump, so the arrival times derived from it are never too early.
        let now = Instant::now();
        self.last_look = now;
        let arrival = if dumped {
            latest.and_then(|idle| now.checked_sub(idle))
        } else {
            Some(now)
        };
        if let Some(arrival) = arrival {
            self.last_arrival = self.last_arrival.max(arrival);
        }
        if dumped {
            self.open = open;
            self.next.sort_unstable();
            std::mem::swap(&mut self.seen, &mut self.next);
        }
        new
    }
}

/// The ports on which the given processes hold listening sockets, except `exclude`.
pub fn listening_ports(pids: &[i32], exclude: u16) -> Vec<u16> {
    let mut inodes: Vec<u32> = pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    inodes.sort_unstable();
    let mut ports = Vec::new();
    let request = dump_request(1 << TCP_LISTEN, 0, &[]);
    // A failed dump finds no port: the caller then waits the full delay.
    let _ = each_socket(&request, |socket| {
        if inodes.binary_search(&socket.inode).is_ok() && socket.local_port != exclude {
            ports.push(socket.local_port);
        }
    });
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Inodes of the sockets a process has open (`/proc/PID/fd/N -> socket:[INODE]`).
fn socket_inodes(pid: i32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The dump request the watch sends: every state but LISTEN, with tcp_info, on `ports` only
/// (left to lameduck past `MAX_FILTERED_PORTS`).
fn request(ports: &[u16]) -> Vec<u8> {
    let filter = if ports.len() <= MAX_FILTERED_PORTS {
        port_filter(ports)
    } else {
        Vec::new()
    };
    dump_request(ALL_BUT_LISTEN, 1 << (INET_DIAG_INFO - 1), &filter)
}

/// A `SOCK_DIAG_BY_FAMILY` dump of TCP sockets in `states`, with the `ext` attributes and
/// the `filter` program (none when empty); the family is filled in per dump.
fn dump_request(states: u32, ext: u8, filter: &[u8]) -> Vec<u8> {
    let attribute_len = if filter.is_empty() {
        0
    } else {
        4 + filter.len()
    };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: (size_of::<Request>() + attribute_len) as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: 0,
        protocol: libc::IPPROTO_TCP as u8,
        ext,
        pad: 0,
        states,
        id: SockId::default(),
    };
    // SAFETY: Request is a repr(C) aggregate of integers with no padding (16 + 56 bytes);
    // the slice covers exactly its bytes and lives no longer than `request`.
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const request).cast::<u8>(), size_of::<Request>())
    };
    let mut out = bytes.to_vec();
    if !filter.is_empty() {
        out.extend_from_slice(&(attribute_len as u16).to_ne_bytes());
        out.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
        out.extend_from_slice(filter);
    }
    out
}

/// An inet_diag filter program that accepts a socket whose local port is one of `ports`.
///
/// The kernel runs it as a chain of `(code, yes, no)` operations: a true test moves `yes`
/// bytes on, a false one `no`; landing exactly on the end accepts, jumping past it rejects. Its
/// audit also wants every `yes` to lead to the next operation, so each port's test is `>= p`,
/// `<= p` and a jump to the end, and a failed comparison skips to the next port's test.
fn port_filter(ports: &[u16]) -> Vec<u8> {
    let len = ports.len() * PORT_TEST;
    let mut code = Vec::with_capacity(len);
    for (i, &port) in ports.iter().enumerate() {
        // Bytes from this port's test to the end of the program.
        let left = len - i * PORT_TEST;
        let on_fail = |at: usize| {
            if i + 1 == ports.len() {
                left - at + 4
            } else {
                PORT_TEST - at
            }
        };
        for (at, comparison) in [(0, BC_S_GE), (8, BC_S_LE)] {
            push_op(&mut code, comparison, 8, on_fail(at));
            push_op(&mut code, 0, 0, usize::from(port));
        }
        push_op(&mut code, BC_JMP, 4, left - 16);
    }
    code
}

/// One `struct inet_diag_bc_op`.
fn push_op(code: &mut Vec<u8>, op: u8, yes: u8, no: usize) {
    code.extend_from_slice(&[op, yes]);
    code.extend_from_slice(&(no as u16).to_ne_bytes());
}

/// Runs `request` for IPv4 and IPv6 in lameduck's network namespace, handing each socket
/// found to `found` as its answer is parsed.
fn each_socket(request: &[u8], mut found: impl FnMut(Socket)) -> io::Result<()> {
    // SAFETY: socket() with constant arguments; the result is checked before it is owned.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a new, valid descriptor that nothing else owns.
    let netlink = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut request = request.to_vec();
    let mut buf = vec![0u8; 32 * 1024];
    for family in [libc::AF_INET, libc::AF_INET6] {
        request[offset_of!(Request, family)] = family as u8;
        dump(&netlink, &request, &mut buf, &mut found)?;
    }
    Ok(())
}

/// Sends one dump request and parses every answer until NLMSG_DONE.
fn dump(
    netlink: &OwnedFd,
    request: &[u8],
    buf: &mut [u8],
    found: &mut impl FnMut(Socket),
) -> io::Result<()> {
    // SAFETY: send reads exactly request.len() bytes from the slice.
    let sent = unsafe {
        libc::send(
            netlink.as_raw_fd(),
            request.as_ptr().cast(),
            request.len(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    loop {
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let got = unsafe { libc::recv(netlink.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(got) = usize::try_from(got) else {
            return Err(io::Error::last_os_error());
        };
        if got == 0 || !parse_messages(&buf[..got], found)? {
            return Ok(());
        }
    }
}

/// Parses one datagram of netlink messages; returns whether more are to come.
fn parse_messages(mut data: &[u8], found: &mut impl FnMut(Socket)) -> io::Result<bool> {
    let header_len = size_of::<libc::nlmsghdr>();
    while data.len() >= header_len {
        let header: libc::nlmsghdr =
            read(data, 0).ok_or_else(|| io::Error::other("short netlink header"))?;
        let len = header.nlmsg_len as usize;
        if len < header_len || len > data.len() {
            return Err(io::Error::other("malformed netlink message"));
        }
        match i32::from(header.nlmsg_type) {
            libc::NLMSG_DONE => return Ok(false),
            libc::NLMSG_ERROR => return Err(io::Error::other("sock_diag refused the dump")),
            _ => {
                if let Some(socket) = parse_socket(&data[header_len..len]) {
                    found(socket);
                }
            }
        }
        data = &data[align(len).min(data.len())..];
    }
    Ok(true)
}

/// One `inet_diag_msg` and its attributes.
fn parse_socket(payload: &[u8]) -> Option<Socket> {
    let message: Message = read(payload, 0)?;
    let mut socket = Socket {
        local_port: u16::from_be_bytes(message.id.sport),
        state: message.state,
        inode: message.inode,
        cookie: u64::from(message.id.cookie[0]) | (u64::from(message.id.cookie[1]) << 32),
        idle_ms: None,
    };
    let mut attributes = payload.get(align(size_of::<Message>())..)?;
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if len < 4 || len > attributes.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            socket.idle_ms = read(
                &attributes[4..len],
                offset_of!(libc::tcp_info, tcpi_last_data_recv),
            );
        }
        attributes = &attributes[align(len).min(attributes.len())..];
    }
    Some(socket)
}

/// Netlink aligns messages and attributes to 4 bytes.
fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// Reads a plain-data `T` at `offset`, if the bytes are there.
fn read<T: Copy>(data: &[u8], offset: usize) -> Option<T> {
    let bytes = data.get(offset..offset.checked_add(size_of::<T>())?)?;
    // SAFETY: the slice holds size_of::<T>() bytes; T is a repr(C) integer aggregate that is
    // valid for any bit pattern, and read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::thread::sleep;

    /// A watch that looks on every poll: a zero quiet period makes every answer due.
    fn eager_watch(port: u16) -> TrafficWatch {
        TrafficWatch::new(vec![port], Duration::ZERO, Duration::ZERO)
    }

    #[test]
    fn finds_the_ports_a_process_listens_on() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id() as i32;
        assert!(listening_ports(&[me], 0).contains(&port));
        assert!(!listening_ports(&[me], port).contains(&port));
    }

    #[test]
    fn sees_a_new_connection_and_bytes_on_a_kept_one() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut watch = eager_watch(port);
        assert_eq!(watch.poll().new_connections, 0, "nothing yet");

        sleep(Duration::from_millis(100));
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let first = watch.poll();
        assert_eq!((first.new_connections, first.open), (1, 1));
        assert!(first.quiet_for < Duration::from_millis(50), "{first:?}");

        sleep(Duration::from_millis(200));
        let idle = watch.poll();
        assert_eq!(idle.new_connections, 0);
        assert!(
            idle.quiet_for >= Duration::from_millis(150),
            "an idle kept-alive connection is quiet: {idle:?}"
        );

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 18];
        server.read_exact(&mut buf).unwrap();
        let request = watch.poll();
        assert_eq!(request.new_connections, 0);
        assert!(
            request.quiet_for < Duration::from_millis(50),
            "a request on a kept-alive connection is traffic: {request:?}"
        );
    }

    #[test]
    fn traffic_to_another_port_is_not_the_apps() {
        let app = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut watch = eager_watch(app.local_addr().unwrap().port());
        sleep(Duration::from_millis(200));
        let mut client = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        client.write_all(b"probe").unwrap();
        let seen = watch.poll();
        assert_eq!((seen.new_connections, seen.open), (0, 0), "{seen:?}");
        assert!(seen.quiet_for >= Duration::from_millis(150), "{seen:?}");
    }

    #[test]
    fn the_port_filter_passes_the_kernels_audit_for_several_ports() {
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let mut watch = TrafficWatch::new(ports, Duration::ZERO, Duration::ZERO);
        let _clients: Vec<TcpStream> = listeners
            .iter()
            .map(|l| TcpStream::connect(l.local_addr().unwrap()).unwrap())
            .collect();
        let seen = watch.poll();
        assert_eq!((seen.new_connections, seen.open), (3, 3), "{seen:?}");
    }

    #[test]
    fn a_quiet_watch_looks_only_when_the_answer_is_due() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut watch = TrafficWatch::new(vec![port], Duration::from_secs(5), Duration::ZERO);
        let baseline = watch.last_look;
        let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let early = watch.poll();
        assert_eq!(watch.last_look, baseline, "no look before an answer is due");
        assert_eq!(early.new_connections, 0);
        sleep(MAX_GAP);
        assert_eq!(
            watch.poll().new_connections,
            1,
            "a look at least every MAX_GAP"
        );
    }

    #[test]
    fn malformed_netlink_data_is_an_error_not_a_panic() {
        let mut found = |_| {};
        assert!(parse_messages(&[0xff; 16], &mut found).is_err());
        assert!(parse_messages(&[], &mut found).is_ok());
        assert_eq!(parse_socket(&[0; 8]), None);
    }
}
