//! Which signals lameduck catches, how they are named, and how they are rewritten before
//! being forwarded to the app.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// Every signal lameduck installs a handler for and forwards to the app.
///
/// As PID 1 the kernel drops any signal that has no handler, so a signal missing here would
/// never reach the app. SIGKILL and SIGSTOP cannot be caught; the synchronous fault signals
/// (SEGV, BUS, ILL, FPE, TRAP, ABRT, SYS) describe lameduck's own state and are left alone.
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
];

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
    fn sigkill_and_sigstop_are_never_caught() {
        assert!(!FORWARDED.contains(&Signal::SIGKILL));
        assert!(!FORWARDED.contains(&Signal::SIGSTOP));
        assert!(!FORWARDED.contains(&Signal::SIGCHLD));
    }
}
