//! The app's traffic as the kernel sees it, through sock_diag netlink (what `ss` uses): which
//! TCP ports the app listens on, and whether anything reaches them — a connection not seen
//! before, or more bytes received on one that was. The adaptive shutdown delay
//! (`--quiet-period`) stops waiting once that stops.

use std::collections::{HashMap, HashSet};
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` from linux/sock_diag.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_INFO`: the attribute carrying `struct tcp_info`.
const INET_DIAG_INFO: u16 = 2;
/// TCP states, as linux/tcp_states.h numbers them.
const TCP_ESTABLISHED: u8 = 1;
const TCP_LISTEN: u8 = 10;
/// Every TCP state (1..=12) but LISTEN.
const ALL_BUT_LISTEN: u32 = 0x1ffe & !(1 << TCP_LISTEN);

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
    /// Bytes received so far (0 for TIME_WAIT sockets, which carry no tcp_info).
    bytes_received: u64,
}

/// Watches traffic to a set of ports.
pub struct TrafficWatch {
    ports: Vec<u16>,
    /// Bytes received so far by each socket seen on the last scan, by cookie.
    seen: HashMap<u64, u64>,
}

/// What one look at the app's sockets found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Connections not seen on the previous scan.
    pub new_connections: usize,
    /// Whether anything arrived: a new connection, or bytes on a known one.
    pub arrived: bool,
    /// Connections established now.
    pub open: usize,
}

impl TrafficWatch {
    /// Starts watching `ports`; what exists now is the baseline.
    pub fn new(ports: Vec<u16>) -> Self {
        let mut watch = TrafficWatch {
            ports,
            seen: HashMap::new(),
        };
        watch.poll();
        watch
    }

    /// The ports watched.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Compares the sockets on the watched ports with the previous scan. A failed dump
    /// reports activity, so that an error can only make lameduck wait longer.
    pub fn poll(&mut self) -> Activity {
        let Ok(sockets) = sockets(ALL_BUT_LISTEN) else {
            return Activity {
                arrived: true,
                ..Activity::default()
            };
        };
        let mut activity = Activity::default();
        let mut current = HashMap::new();
        for socket in sockets
            .into_iter()
            .filter(|s| self.ports.contains(&s.local_port))
        {
            match self.seen.get(&socket.cookie) {
                None => {
                    activity.new_connections += 1;
                    activity.arrived = true;
                }
                Some(&before) if socket.bytes_received > before => activity.arrived = true,
                Some(_) => {}
            }
            if socket.state == TCP_ESTABLISHED {
                activity.open += 1;
            }
            current.insert(socket.cookie, socket.bytes_received);
        }
        self.seen = current;
        activity
    }
}

/// The ports on which the given processes hold listening sockets, except `exclude`.
pub fn listening_ports(pids: &[i32], exclude: u16) -> Vec<u16> {
    let inodes: HashSet<u32> = pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    let mut ports: Vec<u16> = sockets(1 << TCP_LISTEN)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| inodes.contains(&s.inode) && s.local_port != exclude)
        .map(|s| s.local_port)
        .collect();
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

/// Every IPv4 and IPv6 TCP socket in lameduck's network namespace in one of `states` (a bit
/// per state).
fn sockets(states: u32) -> io::Result<Vec<Socket>> {
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
    let mut found = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        dump(&netlink, family as u8, states, &mut found)?;
    }
    Ok(found)
}

/// Sends one dump request and parses every answer until NLMSG_DONE.
fn dump(netlink: &OwnedFd, family: u8, states: u32, found: &mut Vec<Socket>) -> io::Result<()> {
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 1 << (INET_DIAG_INFO - 1),
        pad: 0,
        states,
        id: SockId::default(),
    };
    // SAFETY: the request is a plain repr(C) value; send reads exactly its size.
    let sent = unsafe {
        libc::send(
            netlink.as_raw_fd(),
            (&raw const request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
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
fn parse_messages(mut data: &[u8], found: &mut Vec<Socket>) -> io::Result<bool> {
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
                    found.push(socket);
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
        bytes_received: 0,
    };
    let mut attributes = payload.get(align(size_of::<Message>())..)?;
    while attributes.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attributes[0], attributes[1]]));
        let kind = u16::from_ne_bytes([attributes[2], attributes[3]]);
        if len < 4 || len > attributes.len() {
            break;
        }
        if kind == INET_DIAG_INFO {
            let info = &attributes[4..len];
            socket.bytes_received =
                read(info, offset_of!(libc::tcp_info, tcpi_bytes_received)).unwrap_or(0);
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
        let mut watch = TrafficWatch::new(vec![port]);
        assert_eq!(watch.poll(), Activity::default(), "nothing yet");

        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let first = watch.poll();
        assert_eq!(
            (first.new_connections, first.arrived, first.open),
            (1, true, 1)
        );
        assert!(
            !watch.poll().arrived,
            "an idle kept-alive connection is quiet"
        );

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 18];
        server.read_exact(&mut buf).unwrap();
        let request = watch.poll();
        assert_eq!(request.new_connections, 0);
        assert!(
            request.arrived,
            "a request on a kept-alive connection is traffic"
        );
    }

    #[test]
    fn malformed_netlink_data_is_an_error_not_a_panic() {
        let mut found = Vec::new();
        assert!(parse_messages(&[0xff; 16], &mut found).is_err());
        assert!(parse_messages(&[], &mut found).is_ok());
        assert_eq!(parse_socket(&[0; 8]), None);
    }
}
