//! Listening sockets: the one place that sets the backlog and address reuse of every listener
//! lameduck opens (its endpoints and the drain proxy).

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// How many connections may wait to be accepted: a probe burst must not overflow the queue
/// (the default of 128 costs an overflowing client a 1s SYN retry).
const LISTEN_BACKLOG: u32 = 1024;

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
