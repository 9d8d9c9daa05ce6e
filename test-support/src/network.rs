//! Where the tests listen and which network they live in: free loopback addresses handed out
//! so parallel tests never collide, network namespaces of a test's own (the adaptive delay counts
//! every connection its namespace accepts, so its tests must not share one), a pod's namespace
//! linked to the test's by a veth pair, whether a kept connection is still open, and how many
//! connections a server holds.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;

/// A free port on 127.0.0.1: bound once to learn it, then released.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

/// `count` distinct free ports on `ip`, a loopback address other than 127.0.0.1, held together
/// while they are picked so none is handed out twice.
///
/// Not 127.0.0.1: every outgoing loopback connection (load, proxying, health checks) takes an
/// ephemeral port on 127.0.0.1, and a server started later on such a port fails to bind. A
/// scenario gives its servers their own address (one per test) so no connection can hold their
/// ports, and so tests running in parallel never pick the same one.
pub fn free_addrs(ip: Ipv4Addr, count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((IpAddr::V4(ip), 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}

/// `free_addrs` for a fixed count, to take apart by name: `let [app, endpoints] = addrs(ip);`.
pub fn addrs<const N: usize>(ip: Ipv4Addr) -> [SocketAddr; N] {
    free_addrs(ip, N).try_into().expect("N addresses")
}

/// Moves the calling test's thread into a network namespace of its own, with its loopback up;
/// what the thread starts from then on (lameduck, servers, clients) lives there too.
pub fn own_network() {
    // SAFETY: unshare with a constant flag changes only this thread's namespaces.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare a network namespace (root needed): {}",
        std::io::Error::last_os_error()
    );
    run_ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip ARGS` in the calling thread's network namespace.
pub fn run_ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}: {status}");
}

/// Moves the calling thread into a network namespace of its own (`own_network`), and runs
/// `start` in a second thread with a namespace of its own too, a pod's, linked to the first by a
/// veth pair: `pod` (a /30) on the pod's end, `host` on the caller's. Returns what `start`
/// returned; what it started lives on in the pod's namespace.
pub fn pod_network<T: Send>(pod: Ipv4Addr, host: Ipv4Addr, start: impl FnOnce() -> T + Send) -> T {
    own_network();
    // SAFETY: gettid has no preconditions; the id names this thread's namespace to `ip`.
    let caller = unsafe { libc::gettid() }.to_string();
    let started = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                own_network();
                run_ip(&[
                    "link", "add", "pod", "type", "veth", "peer", "host", "netns", &caller,
                ]);
                run_ip(&["addr", "add", &format!("{pod}/30"), "dev", "pod"]);
                run_ip(&["link", "set", "pod", "up"]);
                start()
            })
            .join()
            .expect("start the pod in its network namespace")
    });
    run_ip(&["addr", "add", &format!("{host}/30"), "dev", "host"]);
    run_ip(&["link", "set", "host", "up"]);
    started
}

/// Whether a kept connection may carry the next request: the server has not closed it (nor sent
/// anything unasked). The stream is left blocking again when it is.
pub fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let idle = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    idle && stream.set_nonblocking(false).is_ok()
}

/// How many established connections the IPv4 server on `addr` holds, its own side of each, as
/// the kernel lists them in /proc/net/tcp for the calling thread's network namespace.
pub fn established_at(addr: SocketAddrV4) -> usize {
    established_peers(addr).len()
}

/// The peers' ports of the established connections the IPv4 server on `addr` holds: a port
/// that changes is a connection closed and another opened.
pub fn established_peers(addr: SocketAddrV4) -> Vec<u16> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    // `sl local_address rem_address st ...`: the address as the kernel stores it (network
    // order, printed as a native u32), the port in host order, the state 01 for ESTABLISHED.
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    );
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&local.as_str()) || fields.get(3) != Some(&"01") {
                return None;
            }
            let (_, port) = fields.get(2)?.split_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}
