//! Listening sockets: the one place that sets the backlog and address reuse of every listener
//! lameduck opens (its endpoints and the drain proxy).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many connections may wait to be accepted: neither a probe burst nor a flood of
/// connections may overflow the queue, since an overflowing client (a probe among them) waits
/// a 1s SYN retry. The kernel caps it at net.core.somaxconn.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr`.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
