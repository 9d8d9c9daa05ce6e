//! Which signals lameduck catches and how it receives them, what it takes over from its parent
//! (the blocked mask, the ignored signals), how signals are named, and how they are rewritten
//! before being forwarded to the app.
//!
//! The caught signals are blocked from the start and read from a signalfd, as tini waits for
//! them with sigtimedwait: no handler runs, a signal waits in the kernel until the loop reads
//! it with its sender, and catching sixty signals costs two system calls.

use std::fmt;
use std::io;
use std::str::FromStr;

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::unix::AsyncFd;

/// Every signal lameduck catches and forwards to the app, besides the real-time ones
/// (SIGRTMIN..SIGRTMAX), which nix has no names for.
///
/// As PID 1 the kernel drops any signal that is neither blocked nor handled, so a signal
/// missing here would never reach the app. SIGKILL and SIGSTOP cannot be caught; SIGILL,
/// SIGFPE and SIGSEGV are left alone (the Rust runtime's handler reports a stack overflow
/// with SIGSEGV), so a `kill -SEGV` to lameduck kills it, or, as PID 1, is dropped.
pub const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGSTKFLT,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGWINCH,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGABRT,
    Signal::SIGBUS,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// Signals that a fault inside lameduck raises, but that users also send with `kill` (ABRT for
/// a core dump of the app). Forwarded only when sent with kill(2) or sigqueue(3). A real fault
/// (a bus error, a breakpoint, seccomp) is forced through the block by the kernel and kills
/// lameduck; raised any other way (tgkill, as abort(3) does), they crash lameduck as they
/// would if it did not catch them.
const FAULT_LIKE: &[Signal] = &[
    Signal::SIGABRT,
    Signal::SIGBUS,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// The names of the real-time signals, counted from SIGRTMIN, as logs and metrics show them.
const REALTIME_NAMES: [&str; 31] = [
    "RTMIN", "RTMIN+1", "RTMIN+2", "RTMIN+3", "RTMIN+4", "RTMIN+5", "RTMIN+6", "RTMIN+7",
    "RTMIN+8", "RTMIN+9", "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13", "RTMIN+14", "RTMIN+15",
    "RTMIN+16", "RTMIN+17", "RTMIN+18", "RTMIN+19", "RTMIN+20", "RTMIN+21", "RTMIN+22", "RTMIN+23",
    "RTMIN+24", "RTMIN+25", "RTMIN+26", "RTMIN+27", "RTMIN+28", "RTMIN+29", "RTMIN+30",
];

/// The real-time signals this C library lets a program catch: 34..=64 with glibc, which keeps
/// 32 and 33 for itself, and 35..=64 with musl (the static build), which keeps 32 to 34.
fn realtime() -> std::ops::RangeInclusive<i32> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// The name of real-time signal `number` (`RTMIN+5`), or None for any other number.
pub fn realtime_name(number: i32) -> Option<&'static str> {
    if !realtime().contains(&number) {
        return None;
    }
    let offset = usize::try_from(number - libc::SIGRTMIN()).ok()?;
    REALTIME_NAMES.get(offset).copied()
}

/// The signals that were ignored when lameduck started, which the app gets ignored too (as it
/// would have from a plain exec, tini or dumb-init). One bit per signal number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ignored(u64);

impl Ignored {
    /// Whether `signal` was ignored.
    pub fn contains(self, signal: Signal) -> bool {
        self.has(signal as i32)
    }

    fn has(self, number: i32) -> bool {
        (1..=64).contains(&number) && self.0 & (1 << (number - 1)) != 0
    }

    /// Ignores each of these signals again. Runs in the forked child before exec, so it makes
    /// only async-signal-safe calls (sigaction).
    pub fn restore(self) -> io::Result<()> {
        for number in 1..=64 {
            if self.has(number) {
                // SAFETY: SIG_IGN installs no code; sigaction is async-signal-safe.
                if unsafe { libc::signal(number, libc::SIG_IGN) } == libc::SIG_ERR {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// The signals a mode catches. Wrapping an app, lameduck catches every signal it forwards,
/// the real-time ones and SIGCHLD; as a sidecar, only the two that stop it.
pub struct Caught(SigSet);

impl Caught {
    /// What the wrapper catches.
    pub fn wrapper() -> Self {
        let mut set: SigSet = FORWARDED.iter().copied().collect();
        set.add(Signal::SIGCHLD);
        let mut raw = *set.as_ref();
        for number in realtime() {
            // SAFETY: `raw` is an initialized sigset_t and `number` a valid signal number.
            unsafe { libc::sigaddset(&mut raw, number) };
        }
        // SAFETY: `raw` came from a valid SigSet and only had signals added.
        Caught(unsafe { SigSet::from_sigset_t_unchecked(raw) })
    }

    /// What the sidecar catches.
    pub fn sidecar() -> Self {
        Caught([Signal::SIGTERM, Signal::SIGINT].into_iter().collect())
    }
}

/// Takes over the signal state lameduck's parent left it: notes which signals are ignored
/// (for the app), and replaces the blocked mask with the caught signals, so that a signal the
/// parent blocked still arrives and a caught one waits for the intake. Runs before any thread
/// starts, so every thread inherits the mask; the app gets an empty one (see `child`).
///
/// SIGPIPE is the exception: the Rust runtime ignores it before `main`, so whether the parent
/// did is unknown, and the app gets the default action, as from `std::process::Command`.
pub fn take_over(caught: &Caught) -> Ignored {
    let mut ignored = 0u64;
    // 32 up to SIGRTMIN belong to the C library, not to the parent.
    for number in (1..32).chain(realtime()) {
        if number == Signal::SIGPIPE as i32 {
            continue;
        }
        // SAFETY: a null new action only reads the current one into `old`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        let read = unsafe { libc::sigaction(number, std::ptr::null(), &mut old) };
        if read == 0 && old.sa_sigaction == libc::SIG_IGN {
            ignored |= 1 << (number - 1);
        }
    }
    if let Err(err) = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&caught.0), None) {
        tracing::warn!(%err, "cannot replace the inherited blocked signal mask");
    }
    Ignored(ignored)
}

/// Where the caught signals are read, one at a time, with their sender.
pub struct Intake(AsyncFd<SignalFd>);

/// One signal lameduck received.
#[derive(Clone, Copy, Debug)]
pub struct Received {
    /// The signal's number.
    pub number: i32,
    /// The sending process, for a signal sent with kill(2), tgkill(2) or sigqueue(3).
    pub sender: u32,
    /// How it was sent (`si_code`): SI_USER for kill(2), SI_QUEUE for sigqueue(3).
    pub code: i32,
}

impl Received {
    /// Whether lameduck raised it itself, as the kernel does for a write to a closed pipe.
    pub fn raised_by_self(&self) -> bool {
        self.code == libc::SI_USER && self.sender == std::process::id()
    }
}

/// Opens the intake for the caught signals, which `take_over` has blocked.
pub fn catch(caught: &Caught) -> io::Result<Intake> {
    let fd = SignalFd::with_flags(&caught.0, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    // SAFETY: the AsyncFd owns the signalfd, so it stays open for as long as it is registered.
    Ok(Intake(unsafe { AsyncFd::register(fd) }?))
}

impl Intake {
    /// The next signal. A fault-like signal that no process sent with kill or sigqueue
    /// crashes lameduck here, as it would have without the block.
    pub async fn next(&mut self) -> io::Result<Received> {
        loop {
            let mut ready = self.0.readable().await?;
            match ready.get_inner().read_signal() {
                Ok(Some(info)) => {
                    let received = Received {
                        number: info.ssi_signo as i32,
                        sender: info.ssi_pid,
                        code: info.ssi_code,
                    };
                    let faulty = FAULT_LIKE.iter().any(|&s| s as i32 == received.number)
                        && !matches!(received.code, libc::SI_USER | libc::SI_QUEUE);
                    if faulty {
                        crash(received.number);
                    }
                    return Ok(received);
                }
                Ok(None) => ready.clear_ready(),
                Err(err) => return Err(err.into()),
            }
        }
    }
}

/// Ends lameduck with `number` as if it did not catch it: the default action, unblocked,
/// raised again. PID 1 ignores a signal it sends itself, so then abort(3), whose
/// last resort (a faulting instruction) the kernel delivers even to PID 1.
fn crash(number: i32) -> ! {
    // SAFETY: plain C library calls on a valid signal number and a local signal set.
    unsafe {
        libc::signal(number, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, number);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(number);
        libc::abort();
    }
}

/// Whether `signal`, received by lameduck, asks it to stop rather than to be forwarded: SIGTERM
/// and SIGINT, and the app's own stop signal, which a container runtime sends in their place
/// when the image's STOPSIGNAL is set to it (the nginx image says SIGQUIT).
pub fn starts_drain(signal: Signal, stop_signal: Signal) -> bool {
    matches!(signal, Signal::SIGTERM | Signal::SIGINT) || signal == stop_signal
}

/// A signal as written on the command line: `TERM`, `SIGTERM`, `term` or `15`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalArg(pub Signal);

impl FromStr for SignalArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(number) = text.parse::<i32>() {
            return Signal::try_from(number)
                .map(SignalArg)
                .map_err(|_| format!("unknown signal number {number}"));
        }
        let upper = text.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full).map(SignalArg).map_err(|_| {
            format!("unknown signal name '{text}' (use a name like TERM or a number like 15)")
        })
    }
}

impl fmt::Display for SignalArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// One `--rewrite FROM:TO` rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// The signal lameduck receives.
    pub from: Signal,
    /// The signal the app gets instead.
    pub to: Signal,
}

impl FromStr for Rewrite {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (from, to) = text
            .split_once(':')
            .ok_or_else(|| format!("'{text}' is not FROM:TO (for example TERM:QUIT or 15:3)"))?;
        Ok(Rewrite {
            from: from.parse::<SignalArg>()?.0,
            to: to.parse::<SignalArg>()?.0,
        })
    }
}

/// The rewrite table: what the app receives for each signal lameduck forwards.
#[derive(Clone, Debug, Default)]
pub struct Rewrites(Vec<Rewrite>);

impl Rewrites {
    /// Builds the table; a later rule for the same signal wins, as on a command line.
    pub fn new(rules: &[Rewrite]) -> Self {
        Rewrites(rules.to_vec())
    }

    /// The signal the app gets when lameduck receives `signal`.
    pub fn apply(&self, signal: Signal) -> Signal {
        self.0
            .iter()
            .rev()
            .find(|rule| rule.from == signal)
            .map_or(signal, |rule| rule.to)
    }
}

/// Short name without the `SIG` prefix, the way the README and the flags write signals.
pub fn short_name(signal: Signal) -> &'static str {
    let name = signal.as_str();
    name.strip_prefix("SIG").unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_prefixes_all_parse() {
        for text in ["TERM", "SIGTERM", "term", "15", " 15 "] {
            assert_eq!(
                text.parse::<SignalArg>(),
                Ok(SignalArg(Signal::SIGTERM)),
                "{text}"
            );
        }
        assert_eq!("QUIT".parse::<SignalArg>(), Ok(SignalArg(Signal::SIGQUIT)));
    }

    #[test]
    fn unknown_signals_are_rejected() {
        for text in ["", "NOPE", "0", "65", "-1", "SIG"] {
            assert!(text.parse::<SignalArg>().is_err(), "{text}");
        }
    }

    #[test]
    fn rewrite_specs_parse_and_apply_last_rule_wins() {
        let rules: Vec<Rewrite> = ["TERM:QUIT", "15:3", "USR1:HUP", "USR1:USR2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let table = Rewrites::new(&rules);
        assert_eq!(table.apply(Signal::SIGTERM), Signal::SIGQUIT);
        assert_eq!(table.apply(Signal::SIGUSR1), Signal::SIGUSR2);
        assert_eq!(table.apply(Signal::SIGHUP), Signal::SIGHUP);
    }

    #[test]
    fn malformed_rewrites_are_rejected() {
        for text in ["TERM", "TERM:", ":QUIT", "TERM:NOPE", "TERM-QUIT"] {
            assert!(text.parse::<Rewrite>().is_err(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn signal_and_rewrite_parsers_never_panic(text in "\\PC{0,30}") {
            let _ = text.parse::<SignalArg>();
            let _ = text.parse::<Rewrite>();
        }

        #[test]
        fn every_signal_parses_by_number_and_by_name(number in 1i32..32) {
            if let Ok(signal) = Signal::try_from(number) {
                proptest::prop_assert_eq!(number.to_string().parse::<SignalArg>(), Ok(SignalArg(signal)));
                proptest::prop_assert_eq!(short_name(signal).parse::<SignalArg>(), Ok(SignalArg(signal)));
                let rule = format!("{}:{number}", short_name(signal)).parse::<Rewrite>();
                proptest::prop_assert_eq!(rule, Ok(Rewrite { from: signal, to: signal }));
            }
        }
    }

    #[test]
    fn realtime_signals_are_named_from_rtmin() {
        assert_eq!(realtime_name(libc::SIGRTMIN()), Some("RTMIN"));
        assert_eq!(realtime_name(libc::SIGRTMIN() + 5), Some("RTMIN+5"));
        assert!(realtime_name(libc::SIGRTMAX()).is_some());
        assert_eq!(realtime_name(Signal::SIGTERM as i32), None);
        assert_eq!(realtime_name(libc::SIGRTMAX() + 1), None);
    }

    #[test]
    fn sigkill_and_sigstop_are_never_caught() {
        assert!(!FORWARDED.contains(&Signal::SIGKILL));
        assert!(!FORWARDED.contains(&Signal::SIGSTOP));
        assert!(!FORWARDED.contains(&Signal::SIGCHLD));
    }
}
