//! The app's traffic as the kernel sees it: which TCP ports the app listens on, and how many
//! new connections reach them, read from /proc/net/tcp and tcp6 of the pod's network
//! namespace. The adaptive shutdown delay (`--quiet-period`) stops waiting once they stop.

use std::collections::HashSet;

/// TCP states in /proc/net/tcp.
const LISTEN: &str = "0A";
const ESTABLISHED: &str = "01";

/// One socket line of /proc/net/tcp{,6}.
#[derive(Debug, PartialEq, Eq)]
struct Socket {
    local_port: u16,
    /// Local and remote address:port as the kernel prints them: one connection's identity.
    key: String,
    state: String,
    inode: u64,
}

/// Watches new connections to a set of ports.
pub struct TrafficWatch {
    ports: Vec<u16>,
    seen: HashSet<String>,
}

impl TrafficWatch {
    /// Starts watching `ports`; connections that exist now are not new.
    pub fn new(ports: Vec<u16>) -> Self {
        let mut watch = TrafficWatch {
            ports,
            seen: HashSet::new(),
        };
        watch.poll();
        watch
    }

    /// The ports watched.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// Scans the socket tables: returns how many connections appeared since the last scan,
    /// and how many are established now.
    pub fn poll(&mut self) -> (usize, usize) {
        let mut new = 0;
        let mut established = 0;
        let mut current = HashSet::new();
        for socket in sockets() {
            if socket.state == LISTEN || !self.ports.contains(&socket.local_port) {
                continue;
            }
            if socket.state == ESTABLISHED {
                established += 1;
            }
            if !self.seen.contains(&socket.key) {
                new += 1;
            }
            current.insert(socket.key);
        }
        self.seen = current;
        (new, established)
    }
}

/// The ports on which the given processes hold listening sockets, except `exclude`.
pub fn listening_ports(pids: &[i32], exclude: u16) -> Vec<u16> {
    let inodes: HashSet<u64> = pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    let mut ports: Vec<u16> = sockets()
        .into_iter()
        .filter(|s| s.state == LISTEN && inodes.contains(&s.inode) && s.local_port != exclude)
        .map(|s| s.local_port)
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Inodes of the sockets a process has open (`/proc/PID/fd/N -> socket:[INODE]`).
fn socket_inodes(pid: i32) -> Vec<u64> {
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

fn sockets() -> Vec<Socket> {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(parse_line)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Parses `sl local rem st tx:rx tr:when retr uid timeout inode ...`.
fn parse_line(line: &str) -> Option<Socket> {
    let mut fields = line.split_whitespace();
    let _slot = fields.next()?;
    let local = fields.next()?;
    let remote = fields.next()?;
    let state = fields.next()?.to_owned();
    let inode = fields.nth(5)?.parse().ok()?;
    let (_, port) = local.rsplit_once(':')?;
    let local_port = u16::from_str_radix(port, 16).ok()?;
    Some(Socket {
        local_port,
        key: format!("{local}-{remote}"),
        state,
        inode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_socket_lines() {
        let line = "   1: 0100007F:1F90 0100007F:A2B4 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1";
        let socket = parse_line(line).unwrap();
        assert_eq!(socket.local_port, 8080);
        assert_eq!(socket.state, "01");
        assert_eq!(socket.inode, 4242);
        assert_eq!(socket.key, "0100007F:1F90-0100007F:A2B4");
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn sees_a_new_connection_to_a_watched_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let me = std::process::id() as i32;
        assert!(listening_ports(&[me], 0).contains(&port));
        assert!(!listening_ports(&[me], port).contains(&port));
        let mut watch = TrafficWatch::new(vec![port]);
        assert_eq!(watch.poll().0, 0);
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, _) = listener.accept().unwrap();
        let (new, established) = watch.poll();
        assert_eq!(new, 1, "the accepted side is new");
        assert_eq!(established, 1);
        assert_eq!(watch.poll().0, 0, "seen once");
    }
}
