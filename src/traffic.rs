//! The app's traffic as the kernel sees it, through sock_diag netlink (what `ss` uses): which
//! TCP ports the app listens on, and when traffic last reached them — a new connection, or
//! bytes received on one. The adaptive shutdown delay (`--quiet-period`) stops waiting once
//! nothing has arrived for its quiet period.
//!
//! The watch costs little however many connections the app holds: the kernel filters the dump
//! down to the app's ports, each socket's `tcp_info` says how long ago it last received data
//! (or, with no data yet, was established), so one look gives the time of the last arrival
//! without comparing anything to an earlier look, and a look is made only when its answer can
//! end the wait, soon after the namespace's counters show a connection opened or ended, or at
//! least every `MAX_GAP`. What it keeps per connection is one cookie.
//!
//! What the socket table cannot show between two looks, a connection opened and closed in
//! between, or bytes on one that closes before the next look, the namespace's counters and the
//! looks' own comparison catch: every tick reads how many connections the network namespace
//! accepted (`PassiveOpens`), less lameduck's own, and a look notes a connection that could
//! still receive at the previous look and is gone. Both count as traffic at the time they are
//! noticed, erring toward a longer wait; so does a connection another container of the pod
//! accepted, which the namespace's count cannot tell from the app's.

use std::fs::File;
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
const TCP_FIN_WAIT1: u8 = 4;
const TCP_FIN_WAIT2: u8 = 5;
const TCP_LISTEN: u8 = 10;
/// Every TCP state (1..=12) but LISTEN.
const ALL_BUT_LISTEN: u32 = 0x1ffe & !(1 << TCP_LISTEN);
/// The longest the watch goes without looking while no answer is due and its counters show
/// nothing new: the open-connection count stays this fresh.
const MAX_GAP: Duration = Duration::from_secs(3);

/// `struct inet_diag_sockid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    family: u8,
    /// Enough to ask for this one socket again.
    id: SockId,
    local_port: u16,
    state: u8,
    inode: u32,
    /// For a listener, the connections waiting to be accepted.
    rqueue: u32,
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
    /// The sock_diag socket every look reuses; `None` when it could not be opened, and then
    /// every look fails, which counts as traffic.
    netlink: Option<OwnedFd>,
    /// The dump request for one address family, the port filter included.
    request: Vec<u8>,
    /// The dump of lameduck's own listener, whose accept queue holds connections the namespace
    /// has counted and the endpoints not yet.
    own_request: Vec<u8>,
    /// The receive buffer every dump reuses.
    buf: Vec<u8>,
    /// The namespace's TCP counters (`/proc/thread-self/net/snmp`), and a buffer to read them.
    snmp: Option<File>,
    snmp_buf: Vec<u8>,
    /// The sockets the last look found, sorted: 8 bytes per connection (see `key`).
    seen: Vec<u64>,
    /// The next look's keys, kept to reuse its memory.
    next: Vec<u64>,
    /// Connections the namespace accepted that lameduck's endpoints did not, at the last reading.
    others: u64,
    /// Whether such a connection opened since the last look: it may have carried bytes until it
    /// closed, unseen by any look.
    opened_since_look: bool,
    /// Connections established in the namespace (`CurrEstab`) at the last reading: when it
    /// falls, one ended, and the next look, which tells whether it was the app's, comes soon.
    established: u64,
    /// Whether a connection ended since the last look.
    ended_since_look: bool,
    /// When traffic last arrived, as far as the looks tell; the watch's start at the earliest.
    last_arrival: Instant,
    /// The latest of those arrivals that no socket in the table can date again: connections
    /// opened or gone unseen, failed looks. An arrival a socket dated is dated anew by the
    /// next look, from the same socket or from its disappearance.
    last_unseen: Instant,
    /// Sockets the deciding look found active within the quiet period, asked for again once it
    /// has passed for each; with the quiet time the rest of that look showed.
    recheck: Vec<Socket>,
    recheck_at: Option<Instant>,
    recheck_quiet: Duration,
    /// The request for one socket.
    get_request: Vec<u8>,
    last_look: Instant,
    /// How long the last look took, which spaces the looks an opened connection asks for.
    look_took: Duration,
    last_tick: Instant,
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
    /// With a look on this tick, how long the app had been quiet when the look saw it: no
    /// socket had received anything for this long, and nothing else had arrived since this
    /// long before the look began. `None` when this tick made no look, so has no answer.
    pub quiet_for: Option<Duration>,
}

impl TrafficWatch {
    /// Starts watching `ports` for a drain that may end once they have been quiet for
    /// `period`, and not before `min_delay` from now; what exists now is the baseline.
    /// `own_port` is lameduck's own listener, whose connections are not the app's.
    pub fn new(mut ports: Vec<u16>, own_port: u16, period: Duration, min_delay: Duration) -> Self {
        ports.sort_unstable();
        ports.dedup();
        let now = Instant::now();
        let mut watch = TrafficWatch {
            request: request(&ports),
            own_request: dump_request(1 << TCP_LISTEN, 0, &port_filter(&[own_port])),
            ports,
            period,
            earliest: now + min_delay,
            netlink: open_netlink().ok(),
            buf: vec![0; RECV_BUF],
            snmp: File::open("/proc/thread-self/net/snmp").ok(),
            snmp_buf: vec![0; SNMP_BUF],
            seen: Vec::new(),
            next: Vec::new(),
            others: 0,
            opened_since_look: false,
            established: 0,
            ended_since_look: false,
            last_arrival: now,
            last_unseen: now,
            recheck: Vec::new(),
            recheck_at: None,
            recheck_quiet: Duration::ZERO,
            get_request: get_request(),
            last_look: now,
            look_took: Duration::ZERO,
            last_tick: now,
            open: 0,
        };
        if let Some(counts) = watch.counts() {
            (watch.others, watch.established) = counts;
        }
        watch.look();
        watch
    }

    /// The ports watched.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// When `poll` should next be called: at the next tick, or sooner when a look falls due
    /// (exactly when the quiet period after the last known arrival ends).
    pub fn next_poll(&self) -> Instant {
        let due = self.recheck_at.unwrap_or_else(|| self.look_due());
        due.min(self.last_tick + TICK)
    }

    /// When the next look is due: once its answer may end the wait (the quiet period since the
    /// last known arrival is over, and so is the minimum delay), soon after a connection opened
    /// or ended (so that a short one, or a closed one's last bytes, are placed in time), and at
    /// least every `MAX_GAP`.
    ///
    /// The deciding look starts early by the last look's duration, so that it ends about when
    /// the quiet period does: the few sockets it finds active within the period are asked for
    /// again one by one when the period has passed for them (`recheck`).
    fn look_due(&self) -> Instant {
        let settled = (self.last_arrival + self.period)
            .checked_sub(self.look_took)
            .unwrap_or(self.last_arrival);
        let answer = settled
            .max(self.last_unseen + self.period)
            .max(self.earliest);
        let mut due = answer.min(self.last_look + MAX_GAP);
        if self.opened_since_look || self.ended_since_look {
            due = due.min(self.last_look + self.look_took * FOLLOW_UP_SPACING);
        }
        due
    }

    /// One tick: reads the namespace's count of accepted connections, then looks at the
    /// sockets if a look is due, and reports what the last look found.
    pub fn poll(&mut self) -> Activity {
        let now = Instant::now();
        self.last_tick = now;
        if self.opened() {
            self.last_arrival = self.last_arrival.max(now);
            self.last_unseen = self.last_unseen.max(now);
            self.opened_since_look = true;
        }
        if let Some(at) = self.recheck_at {
            if Instant::now() < at {
                return self.no_answer();
            }
            let quiet_for = self.recheck();
            return Activity {
                new_connections: 0,
                open: self.open,
                quiet_for: Some(quiet_for),
            };
        }
        if Instant::now() < self.look_due() {
            return self.no_answer();
        }
        let (new_connections, quiet_for) = self.look();
        Activity {
            new_connections,
            open: self.open,
            quiet_for,
        }
    }

    fn no_answer(&self) -> Activity {
        Activity {
            new_connections: 0,
            open: self.open,
            quiet_for: None,
        }
    }

    /// Asks again for each socket the deciding look found active within the quiet period;
    /// returns how long the app has been quiet. A socket gone, or a connection opened or ended
    /// meanwhile, is traffic now.
    fn recheck(&mut self) -> Duration {
        self.recheck_at = None;
        let mut quiet_for = self.recheck_quiet;
        let mut unplaced = self.opened() || self.ended_since_look;
        for socket in std::mem::take(&mut self.recheck) {
            let again = self
                .netlink
                .as_ref()
                .map(|netlink| get(netlink, &mut self.get_request, &mut self.buf, &socket));
            let at = Instant::now();
            match again {
                Some(Ok(Some(Socket {
                    idle_ms: Some(ms), ..
                }))) => {
                    let idle = idle_since(ms);
                    quiet_for = quiet_for.min(idle);
                    if let Some(arrival) = at.checked_sub(idle) {
                        self.last_arrival = self.last_arrival.max(arrival);
                    }
                }
                _ => unplaced = true,
            }
        }
        if unplaced {
            let now = Instant::now();
            self.last_arrival = self.last_arrival.max(now);
            self.last_unseen = self.last_unseen.max(now);
            quiet_for = Duration::ZERO;
        }
        quiet_for
    }

    /// Whether a connection lameduck's endpoints did not accept opened in the namespace since
    /// the last reading; an unreadable count says yes, so that it can only make the wait longer.
    /// Notes too whether a connection ended.
    fn opened(&mut self) -> bool {
        match self.counts() {
            Some((others, established)) => {
                let opened = others > self.others;
                self.others = self.others.max(others);
                self.ended_since_look |= established < self.established;
                self.established = established;
                opened
            }
            None => true,
        }
    }

    /// Connections the namespace accepted (`PassiveOpens`) less those lameduck's endpoints
    /// accepted or hold in their accept queue. The count is read before and after lameduck's
    /// own, and taken only when both agree, so that no connection of the app's is ever set off
    /// against one of lameduck's that the counts caught at different moments (nothing is
    /// accepted meanwhile: the runtime runs this, and the endpoints, on one thread). Returns it
    /// with the namespace's established connections.
    fn counts(&mut self) -> Option<(u64, u64)> {
        for _ in 0..EXACT_TRIES {
            let (before, _) = tcp_counters(self.snmp.as_ref()?, &mut self.snmp_buf)?;
            let mut queued = 0u64;
            let netlink = self.netlink.as_ref()?;
            each_socket(
                netlink,
                &mut self.own_request,
                &mut self.buf,
                |socket, _| {
                    queued += u64::from(socket.rqueue);
                },
            )
            .ok()?;
            let (after, established) = tcp_counters(self.snmp.as_ref()?, &mut self.snmp_buf)?;
            if before == after {
                let others = before.saturating_sub(crate::http::accepted() + queued);
                return Some((others, established));
            }
        }
        None
    }

    /// Dumps the sockets on the watched ports; moves `last_arrival` up to the latest traffic
    /// they and the namespace's counters show; returns how many sockets were not there on the
    /// previous look, and how long the app had been quiet (see `Activity::quiet_for`).
    ///
    /// What a look cannot place in time counts as traffic at its end: a failed dump, a
    /// connection that opened since the previous look (it may have come and gone unseen), a
    /// connection that could still receive at the previous look and is gone now (its last
    /// bytes may have come just before it closed), a new socket without `tcp_info`.
    fn look(&mut self) -> (usize, Option<Duration>) {
        let started = Instant::now();
        self.next.clear();
        self.recheck.clear();
        let (mut latest, mut min_idle, mut open, mut unplaced) = (None, None, 0, false);
        let (mut recheck_at, mut too_many, mut min_active) = (None, false, Duration::MAX);
        let (ports, next, recheck, period) =
            (&self.ports, &mut self.next, &mut self.recheck, self.period);
        let filtered = ports.len() <= MAX_FILTERED_PORTS;
        let dumped = ports.is_empty()
            || self.netlink.as_ref().is_some_and(|netlink| {
                each_socket(netlink, &mut self.request, &mut self.buf, |socket, at| {
                    if !filtered && ports.binary_search(&socket.local_port).is_err() {
                        return;
                    }
                    next.push(key(&socket));
                    open += usize::from(socket.state == TCP_ESTABLISHED);
                    // A socket without tcp_info is placed below, once it is known whether
                    // it is new; an old one received nothing the earlier looks did not see.
                    if let Some(ms) = socket.idle_ms {
                        let idle = idle_since(ms);
                        // When the datagram holding it came, less its idle time: never earlier
                        // than the true arrival.
                        let arrival = at.checked_sub(idle).unwrap_or(at);
                        latest = Some(latest.map_or(arrival, |l: Instant| l.max(arrival)));
                        if idle >= period {
                            min_idle = Some(min_idle.map_or(idle, |m: Duration| m.min(idle)));
                        } else {
                            min_active = min_active.min(idle);
                            if recheck.len() < RECHECK_MAX {
                                recheck.push(socket);
                                let due = arrival + period;
                                recheck_at = Some(recheck_at.map_or(due, |r: Instant| r.max(due)));
                            } else {
                                too_many = true;
                            }
                        }
                    }
                })
                .is_ok()
            });
        let mut new = 0;
        if dumped {
            self.next.sort_unstable();
            self.next.dedup_by_key(|k| *k >> 2);
            let (found, vanished) = compare(&self.seen, &self.next);
            new = found.new;
            unplaced |= vanished > 0 || found.new_without_info > 0;
        }
        // One counted now may have opened after the dump: the next look must not trust the
        // table about it either.
        let opened_now = self.opened();
        let opened = opened_now || self.opened_since_look;
        self.opened_since_look = opened_now;
        self.ended_since_look = false;
        let now = Instant::now();
        if !dumped || opened || unplaced {
            self.last_unseen = now;
        }
        let rest = started
            .saturating_duration_since(self.last_unseen)
            .min(min_idle.unwrap_or(Duration::MAX));
        self.last_arrival = self
            .last_arrival
            .max(self.last_unseen)
            .max(latest.unwrap_or(self.last_unseen));
        self.last_look = now;
        self.look_took = now - started;
        if dumped {
            self.open = open;
            std::mem::swap(&mut self.seen, &mut self.next);
        }
        let quiet_for = match recheck_at {
            None => Some(rest),
            // The rest was quiet, and the sockets active within the period pass it soon:
            // the answer waits for them.
            Some(at)
                if !too_many
                    && rest >= self.period
                    && at <= now + RECHECK_WITHIN.max(self.look_took * 2) =>
            {
                self.recheck_at = Some(at.max(self.last_unseen + self.period));
                self.recheck_quiet = rest;
                None
            }
            Some(_) => {
                self.recheck.clear();
                Some(rest.min(min_active))
            }
        };
        (new, quiet_for)
    }
}

/// How often the watch reads the namespace's counters, which costs a few microseconds.
pub const TICK: Duration = Duration::from_millis(100);
/// After a connection opened, the next look waits this many times the last look's duration,
/// so that such looks take at most a tenth of lameduck's time however many sockets there are.
const FOLLOW_UP_SPACING: u32 = 10;
/// At most this many sockets active within the quiet period are asked for again; with more,
/// the app is not quiet.
const RECHECK_MAX: usize = 16;
/// Sockets are asked for again only if the quiet period passes for all of them this soon.
const RECHECK_WITHIN: Duration = Duration::from_millis(200);
/// Tries at reading the counters with no connection opened in between.
const EXACT_TRIES: usize = 3;
/// Receive buffer for a dump: the kernel fills up to 32 KiB per datagram.
const RECV_BUF: usize = 32 * 1024;
/// `/proc/net/snmp` is about 1.5 KiB.
const SNMP_BUF: usize = 8 * 1024;

/// How long a socket has surely been idle, given `tcpi_last_data_recv`: the kernel counts it
/// in jiffies, which can make it one jiffy (up to 10 ms) longer than the time that passed.
fn idle_since(ms: u32) -> Duration {
    Duration::from_millis(ms.into()).saturating_sub(JIFFY)
}

/// The longest jiffy (`HZ=100`).
const JIFFY: Duration = Duration::from_millis(10);

/// The key a look keeps per socket: its cookie, shifted, then whether the peer could still
/// send on it (so that its disappearance may hide bytes), and whether it came without
/// `tcp_info`. Kernel cookies count up from 1, far from the top bits the shift drops.
fn key(socket: &Socket) -> u64 {
    let may_receive = matches!(
        socket.state,
        TCP_ESTABLISHED | TCP_FIN_WAIT1 | TCP_FIN_WAIT2
    );
    (socket.cookie << 2) | (u64::from(may_receive) << 1) | u64::from(socket.idle_ms.is_none())
}

/// Compares two looks' sorted keys: what is new in `now`, and how many sockets that could
/// still receive in `before` are gone from it.
fn compare(before: &[u64], now: &[u64]) -> (Found, usize) {
    let (mut found, mut vanished) = (Found::default(), 0);
    let (mut b, mut n) = (before.iter().peekable(), now.iter().peekable());
    loop {
        match (b.peek(), n.peek()) {
            (Some(&&old), Some(&&new)) if old >> 2 == new >> 2 => {
                b.next();
                n.next();
            }
            (Some(&&old), Some(&&new)) if old >> 2 < new >> 2 => {
                vanished += usize::from(old & 2 != 0);
                b.next();
            }
            (_, Some(&&new)) => {
                found.new += 1;
                found.new_without_info += usize::from(new & 1 != 0);
                n.next();
            }
            (Some(&&old), None) => {
                vanished += usize::from(old & 2 != 0);
                b.next();
            }
            (None, None) => return (found, vanished),
        }
    }
}

/// What a look found against the previous one.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    /// Sockets the previous look had not seen.
    new: usize,
    /// Of those, the ones without `tcp_info` to say when they last received.
    new_without_info: usize,
}

/// The ports on which the given processes hold listening sockets, except `exclude`.
pub fn listening_ports(pids: &[i32], exclude: u16) -> Vec<u16> {
    let mut inodes: Vec<u32> = pids.iter().flat_map(|pid| socket_inodes(*pid)).collect();
    inodes.sort_unstable();
    let mut ports = Vec::new();
    let mut request = dump_request(1 << TCP_LISTEN, 0, &[]);
    let mut buf = vec![0; RECV_BUF];
    // A failed dump finds no port: the caller then waits the full delay.
    let _ = open_netlink().and_then(|netlink| {
        each_socket(&netlink, &mut request, &mut buf, |socket, _| {
            if inodes.binary_search(&socket.inode).is_ok() && socket.local_port != exclude {
                ports.push(socket.local_port);
            }
        })
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

/// A request for one TCP socket, in any state, with tcp_info; `get` fills in which.
fn get_request() -> Vec<u8> {
    let mut request = dump_request(0xfff << 1, 1 << (INET_DIAG_INFO - 1), &[]);
    let flags = offset_of!(libc::nlmsghdr, nlmsg_flags);
    request[flags..flags + 2].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    request
}

/// Asks for `socket` again; `None` when it is gone.
fn get(
    netlink: &OwnedFd,
    request: &mut [u8],
    buf: &mut [u8],
    socket: &Socket,
) -> io::Result<Option<Socket>> {
    request[offset_of!(Request, family)] = socket.family;
    let id = offset_of!(Request, id);
    // SAFETY: SockId is a repr(C) aggregate of integers without padding; the slice covers
    // exactly its bytes and lives no longer than `socket`.
    let id_bytes = unsafe {
        std::slice::from_raw_parts((&raw const socket.id).cast::<u8>(), size_of::<SockId>())
    };
    request[id..id + size_of::<SockId>()].copy_from_slice(id_bytes);
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
    // SAFETY: recv writes at most buf.len() bytes into buf.
    let got = unsafe { libc::recv(netlink.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    let Ok(got) = usize::try_from(got) else {
        return Err(io::Error::last_os_error());
    };
    let data = &buf[..got];
    let header: libc::nlmsghdr =
        read(data, 0).ok_or_else(|| io::Error::other("short netlink header"))?;
    let len = (header.nlmsg_len as usize).min(data.len());
    let payload = data
        .get(size_of::<libc::nlmsghdr>()..len)
        .unwrap_or_default();
    if i32::from(header.nlmsg_type) == libc::NLMSG_ERROR {
        return match read::<i32>(payload, 0) {
            Some(code) if code == -libc::ENOENT => Ok(None),
            _ => Err(io::Error::other("sock_diag refused the request")),
        };
    }
    Ok(parse_socket(payload))
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

/// A sock_diag netlink socket.
fn open_netlink() -> io::Result<OwnedFd> {
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
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Runs `request` for IPv4 and IPv6 in lameduck's network namespace, handing each socket
/// found to `found` as its answer is parsed, with the time its datagram was received.
fn each_socket(
    netlink: &OwnedFd,
    request: &mut [u8],
    buf: &mut [u8],
    mut found: impl FnMut(Socket, Instant),
) -> io::Result<()> {
    for family in [libc::AF_INET, libc::AF_INET6] {
        request[offset_of!(Request, family)] = family as u8;
        dump(netlink, request, buf, &mut found)?;
    }
    Ok(())
}

/// Sends one dump request and parses every answer until NLMSG_DONE.
fn dump(
    netlink: &OwnedFd,
    request: &[u8],
    buf: &mut [u8],
    found: &mut impl FnMut(Socket, Instant),
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
        let at = Instant::now();
        if got == 0 || !parse_messages(&buf[..got], &mut |socket| found(socket, at))? {
            return Ok(());
        }
    }
}

/// The network namespace's counts of accepted TCP connections and of established ones, from
/// `/proc/net/snmp`.
fn tcp_counters(snmp: &File, buf: &mut [u8]) -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let len = snmp.read_at(buf, 0).ok()?;
    parse_tcp_counters(std::str::from_utf8(buf.get(..len)?).ok()?)
}

/// The `PassiveOpens` and `CurrEstab` columns of the two `Tcp:` lines of `/proc/net/snmp`.
fn parse_tcp_counters(text: &str) -> Option<(u64, u64)> {
    let mut tcp = text.lines().filter_map(|line| line.strip_prefix("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let column = |wanted| names.split_whitespace().position(|name| name == wanted);
    let value = |at: usize| values.split_whitespace().nth(at)?.parse().ok();
    Some((
        value(column("PassiveOpens")?)?,
        value(column("CurrEstab")?)?,
    ))
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
        family: message.family,
        id: message.id,
        local_port: u16::from_be_bytes(message.id.sport),
        state: message.state,
        inode: message.inode,
        rqueue: message.rqueue,
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

    /// Moves the calling test's thread into a network namespace of its own, with its loopback
    /// up, so that other tests' connections do not reach its counters.
    fn own_network() {
        // SAFETY: unshare with a constant flag changes only this thread's namespaces.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare (root needed)"
        );
        let up = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
    }

    /// A watch that looks on every poll: a zero quiet period makes every answer due.
    fn eager_watch(port: u16) -> TrafficWatch {
        TrafficWatch::new(vec![port], 0, Duration::ZERO, Duration::ZERO)
    }

    fn quiet_for(activity: &Activity) -> Duration {
        activity.quiet_for.expect("a look on this tick")
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
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut watch = eager_watch(port);
        assert_eq!(watch.poll().new_connections, 0, "nothing yet");

        sleep(Duration::from_millis(100));
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let first = watch.poll();
        assert_eq!((first.new_connections, first.open), (1, 1));
        assert!(quiet_for(&first) < Duration::from_millis(50), "{first:?}");

        sleep(Duration::from_millis(200));
        let idle = watch.poll();
        assert_eq!(idle.new_connections, 0);
        assert!(
            quiet_for(&idle) >= Duration::from_millis(150),
            "an idle kept-alive connection is quiet: {idle:?}"
        );

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut buf = [0u8; 18];
        server.read_exact(&mut buf).unwrap();
        let request = watch.poll();
        assert_eq!(request.new_connections, 0);
        assert!(
            quiet_for(&request) < Duration::from_millis(50),
            "a request on a kept-alive connection is traffic: {request:?}"
        );
    }

    #[test]
    fn a_connection_opened_and_closed_between_two_looks_is_traffic() {
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut watch = eager_watch(listener.local_addr().unwrap().port());
        sleep(Duration::from_millis(200));
        drop(TcpStream::connect(listener.local_addr().unwrap()).unwrap());
        drop(listener.accept().unwrap());
        // Until the server's socket is gone from the table, the look would see it anyway.
        sleep(Duration::from_millis(50));
        let seen = watch.poll();
        assert_eq!(seen.new_connections, 0, "gone before the look: {seen:?}");
        assert_eq!(quiet_for(&seen), Duration::ZERO, "{seen:?}");
    }

    #[test]
    fn a_kept_connection_that_closes_between_two_looks_is_traffic() {
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut watch = eager_watch(listener.local_addr().unwrap().port());
        sleep(Duration::from_millis(200));
        assert!(quiet_for(&watch.poll()) >= Duration::from_millis(150));
        // The client closes first, so no TIME_WAIT socket stays on the server's side.
        drop(client);
        drop(server);
        sleep(Duration::from_millis(50));
        let seen = watch.poll();
        assert_eq!(quiet_for(&seen), Duration::ZERO, "{seen:?}");
    }

    #[test]
    fn a_connection_that_ends_brings_the_next_look_forward() {
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let port = listener.local_addr().unwrap().port();
        // No answer due for 5 s, and no look for MAX_GAP without news.
        let mut watch = TrafficWatch::new(vec![port], 0, Duration::from_secs(5), Duration::ZERO);
        drop(client);
        drop(server);
        sleep(Duration::from_millis(50));
        // Well before MAX_GAP, on the ticks the watch asks for.
        let deadline = Instant::now() + MAX_GAP / 2;
        let answer = loop {
            if let Some(quiet_for) = watch.poll().quiet_for {
                break Some(quiet_for);
            }
            if Instant::now() > deadline {
                break None;
            }
            sleep(watch.next_poll().saturating_duration_since(Instant::now()));
        };
        assert_eq!(
            answer,
            Some(Duration::ZERO),
            "a look soon after a connection ended finds the app's gone"
        );
    }

    #[test]
    fn the_deciding_look_waits_out_the_quiet_period_of_the_last_active_socket() {
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let period = Duration::from_millis(300);
        let port = listener.local_addr().unwrap().port();
        let mut watch = TrafficWatch::new(vec![port], 0, period, Duration::ZERO);
        client.write_all(b"request").unwrap();
        server.read_exact(&mut [0u8; 7]).unwrap();
        let sent = Instant::now();
        let deadline = sent + Duration::from_secs(3);
        let quiet_for = loop {
            match watch.poll().quiet_for {
                Some(quiet_for) if quiet_for >= period => break quiet_for,
                _ => {}
            }
            assert!(Instant::now() < deadline, "never quiet");
            sleep(watch.next_poll().saturating_duration_since(Instant::now()));
        };
        assert!(
            sent.elapsed() + Duration::from_millis(5) >= period,
            "quiet after {:?}, {quiet_for:?}",
            sent.elapsed()
        );
    }

    #[test]
    fn connections_to_lameducks_own_port_are_not_traffic() {
        own_network();
        let app = TcpListener::bind("127.0.0.1:0").unwrap();
        let own = TcpListener::bind("127.0.0.1:0").unwrap();
        let own_port = own.local_addr().unwrap().port();
        let mut watch = TrafficWatch::new(
            vec![app.local_addr().unwrap().port()],
            own_port,
            Duration::ZERO,
            Duration::ZERO,
        );
        sleep(Duration::from_millis(200));
        // Not accepted: a connection in lameduck's accept queue is its own.
        let _probe = TcpStream::connect(own.local_addr().unwrap()).unwrap();
        sleep(Duration::from_millis(50));
        let seen = watch.poll();
        assert!(quiet_for(&seen) >= Duration::from_millis(150), "{seen:?}");
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
        let mut watch = TrafficWatch::new(ports, 0, Duration::ZERO, Duration::ZERO);
        let _clients: Vec<TcpStream> = listeners
            .iter()
            .map(|l| TcpStream::connect(l.local_addr().unwrap()).unwrap())
            .collect();
        let seen = watch.poll();
        assert_eq!((seen.new_connections, seen.open), (3, 3), "{seen:?}");
    }

    #[test]
    fn a_quiet_watch_looks_only_when_the_answer_is_due() {
        own_network();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut watch = TrafficWatch::new(vec![port], 0, Duration::from_secs(5), Duration::ZERO);
        let baseline = watch.last_look;
        let early = watch.poll();
        assert_eq!(watch.last_look, baseline, "no look before an answer is due");
        assert_eq!(early.quiet_for, None);
        assert!(watch.next_poll() <= Instant::now() + TICK);
        sleep(MAX_GAP);
        assert!(
            watch.poll().quiet_for.is_some(),
            "a look at least every MAX_GAP"
        );
    }

    #[test]
    fn reads_the_tcp_counters_from_the_snmp_table() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
            Tcp: RtoAlgorithm MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab\n\
            Tcp: 1 -1 499228 384421 114217 40765 11026\nUdp: InDatagrams\nUdp: 5\n";
        assert_eq!(parse_tcp_counters(text), Some((384421, 11026)));
        assert_eq!(parse_tcp_counters("Tcp: PassiveOpens CurrEstab\n"), None);
        assert_eq!(parse_tcp_counters(""), None);
    }

    #[test]
    fn compares_two_looks_by_cookie() {
        let receiving = |cookie: u64| cookie << 2 | 2;
        let closing = |cookie: u64| cookie << 2;
        let without_info = |cookie: u64| cookie << 2 | 1;
        let before = [receiving(1), closing(2), receiving(3), receiving(5)];
        let now = [closing(1), receiving(4), without_info(6)];
        let (found, vanished) = compare(&before, &now);
        assert_eq!(
            found,
            Found {
                new: 2,
                new_without_info: 1
            }
        );
        assert_eq!(vanished, 2, "3 and 5 could receive; 2 could not");
    }

    #[test]
    fn malformed_netlink_data_is_an_error_not_a_panic() {
        let mut found = |_| {};
        assert!(parse_messages(&[0xff; 16], &mut found).is_err());
        assert!(parse_messages(&[], &mut found).is_ok());
        assert_eq!(parse_socket(&[0; 8]), None);
    }
}
