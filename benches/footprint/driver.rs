//! The footprint and speed benchmark that benches/footprint.sh runs: lameduck against tini
//! (dynamic and static) and dumb-init, each as PID 1 of its own PID namespace, on startup and
//! exit, idle memory, binary size, signal-forwarding latency and reaping 5,000 orphans; then
//! lameduck alone on /readyz under a probe flood and on the accuracy of its drain timeline.
//! Prints one Markdown table with lameduck's ratio to each tini and the targets.
//!
//! Latencies cross processes: the driver reads CLOCK_MONOTONIC just before kill(), the receiver
//! (this same binary, `receive` mode, run by the wrapper as its app) reads it when the signal
//! arrives and writes it to its stdout, a pipe back to the driver. CLOCK_MONOTONIC is one clock
//! for every process on a machine, so the two readings subtract.
//!
//! Usage: footprint_bench --lameduck PATH --fixture PATH [--quick]
//!        footprint_bench receive

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lameduck_test_support::http::status;
use lameduck_test_support::network::still_open;
use lameduck_test_support::process::{
    Lines, children, cpu_time_ms, pid1_command, pid1_of, poll_until, status_kib,
};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;

/// The shutdown delay of the drain-timeline runs: the stop signal's lateness is measured
/// against it.
const DRAIN_DELAY: Duration = Duration::from_secs(2);
/// Idle connections held open against lameduck's endpoints in the "1,000 idle" runs.
const IDLE_CONNECTIONS: usize = 1000;
/// Orphans the fixture makes in the reaping runs.
const ORPHANS: usize = 5000;
/// Orphans must all be reaped within this after the fixture made the last one.
const REAP_BOUND: Duration = Duration::from_secs(2);
/// How often a wait looks again: the finest step the timings are read at.
const POLL: Duration = Duration::from_millis(1);

/// How much of each measurement to do: the full run, or a quick one to try the script out.
struct Counts {
    startup_runs: usize,
    startup_warmup: usize,
    usr1: usize,
    term: usize,
    orphan_runs: usize,
    memory_runs: usize,
    wrk_seconds: u64,
    timeline_runs: usize,
}

const FULL: Counts = Counts {
    startup_runs: 1000,
    startup_warmup: 20,
    usr1: 2000,
    term: 200,
    orphan_runs: 3,
    memory_runs: 3,
    wrk_seconds: 10,
    timeline_runs: 5,
};

const QUICK: Counts = Counts {
    startup_runs: 50,
    startup_warmup: 5,
    usr1: 200,
    term: 20,
    orphan_runs: 1,
    memory_runs: 1,
    wrk_seconds: 2,
    timeline_runs: 1,
};

/// One init under test.
struct Wrapper {
    name: &'static str,
    path: PathBuf,
    /// Flags before `--`: lameduck listens on a port of its own so runs never collide on 8099.
    flags: Vec<String>,
}

impl Wrapper {
    fn is_lameduck(&self) -> bool {
        self.name == "lameduck"
    }

    /// `WRAPPER FLAGS -- app...`, with `extra` flags after the usual ones.
    fn argv(&self, extra: &[&str], app: &[&str]) -> Vec<String> {
        let mut argv = vec![self.path.display().to_string()];
        argv.extend(self.flags.iter().cloned());
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.push("--".into());
        argv.extend(app.iter().map(|s| s.to_string()));
        argv
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut lameduck = None;
    let mut fixture = None;
    let mut counts = &FULL;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "receive" => receive(),
            "--lameduck" => lameduck = args.next().map(PathBuf::from),
            "--fixture" => fixture = args.next().map(PathBuf::from),
            "--quick" => counts = &QUICK,
            other => panic!(
                "unknown argument {other:?}; usage: --lameduck PATH --fixture PATH [--quick] | receive"
            ),
        }
    }
    let lameduck = lameduck.expect("--lameduck PATH (the static release build)");
    let fixture = fixture.expect("--fixture PATH (the fixture app, for its orphans mode)");
    raise_open_files();
    let listen = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    let wrappers = [
        Wrapper {
            name: "lameduck",
            path: lameduck,
            flags: listen,
        },
        Wrapper {
            name: "tini",
            path: which("tini"),
            flags: vec![],
        },
        Wrapper {
            name: "tini-static",
            path: which("tini-static"),
            flags: vec![],
        },
        Wrapper {
            name: "dumb-init",
            path: which("dumb-init"),
            flags: vec![],
        },
    ];
    let receiver = std::env::current_exe().expect("own path");

    let mut table = Table::default();
    progress("startup + exit (hyperfine)");
    let (startup, baseline) = startup(&wrappers, counts);
    table.row(
        "startup + exit as PID 1, mean ± σ",
        startup.iter().map(Timing::cell).collect(),
        ratios(&startup, |s| s.mean),
        "≤ 1.1× tini",
        Some(startup[0].mean <= 1.1 * startup[1].mean.min(startup[2].mean)),
    );

    progress("idle memory");
    let memory: Vec<(f64, f64)> = wrappers
        .iter()
        .map(|w| {
            let samples: Vec<(f64, f64)> = (0..counts.memory_runs)
                .map(|_| idle_memory_kib(w))
                .collect();
            let mut rss: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let mut anon: Vec<f64> = samples.iter().map(|s| s.1).collect();
            (median(&mut rss), median(&mut anon))
        })
        .collect();
    table.row(
        "idle VmRSS of PID 1 (`sleep 1000` under it, after 1 s)",
        memory.iter().map(|m| size_cell(m.0 * 1024.0)).collect(),
        ratios(&memory, |m| m.0),
        "≤ 1.5 MiB",
        Some(memory[0].0 <= 1536.0),
    );
    // VmRSS counts the binary's pages that are mapped, which the page cache shares between
    // every process running the same file; RssAnon is what each PID 1 costs on its own.
    table.row(
        "the same, private (RssAnon)",
        memory.iter().map(|m| size_cell(m.1 * 1024.0)).collect(),
        ratios(&memory, |m| m.1),
        "—",
        None,
    );

    let sizes: Vec<(f64, String)> = wrappers.iter().map(|w| binary(&w.path)).collect();
    table.row(
        "binary size",
        sizes
            .iter()
            .map(|(bytes, kind)| format!("{} ({kind})", size_cell(*bytes)))
            .collect(),
        ratios(&sizes, |s| s.0),
        "≤ 1.25 MiB, static, stripped",
        Some(sizes[0].0 <= 1.25 * 1024.0 * 1024.0 && sizes[0].1 == "static, stripped"),
    );

    progress("signal forwarding");
    let term: Vec<Latency> = wrappers
        .iter()
        .map(|w| term_latency(w, &receiver, counts.term))
        .collect();
    table.latency_row(
        &format!(
            "SIGTERM → app, p50 / p99 ({} runs; lameduck with `--shutdown-delay 0`)",
            counts.term
        ),
        &term,
        FORWARDING_TARGET,
        Some(forwarding_met(&term)),
    );
    let usr1: Vec<Latency> = wrappers
        .iter()
        .map(|w| usr1_latency(w, &receiver, counts.usr1))
        .collect();
    table.latency_row(
        &format!("SIGUSR1 → app, p50 / p99 ({} signals)", counts.usr1),
        &usr1,
        FORWARDING_TARGET,
        Some(forwarding_met(&usr1)),
    );

    progress("5,000 orphans");
    let orphans: Vec<Orphans> = wrappers
        .iter()
        .map(|w| orphans(w, &fixture, counts.orphan_runs))
        .collect();
    table.row(
        &format!("{ORPHANS} orphans: left after 2 s / all reaped after"),
        orphans.iter().map(Orphans::reap_cell).collect(),
        vec!["—".into(), "—".into()],
        "none left after 2 s",
        Some(orphans[0].left == 0),
    );
    table.row(
        &format!("{ORPHANS} orphans: CPU of PID 1 (utime+stime; scheduler's count)"),
        orphans.iter().map(Orphans::cpu_cell).collect(),
        ratios(&orphans, |o| o.cpu_ms),
        "≤ 2× tini",
        Some(orphans[0].cpu_ms <= 2.0 * orphans[1].cpu_ms.min(orphans[2].cpu_ms)),
    );

    progress("/readyz under wrk");
    let lameduck = &wrappers[0];
    let flood = wrk_flood(lameduck, &receiver, counts.wrk_seconds, 0);
    table.lameduck_row(
        &format!(
            "/readyz, `wrk -t2 -c50 -d{}s --latency`: req/s, p99",
            counts.wrk_seconds
        ),
        flood,
    );
    let flood_idle = wrk_flood(lameduck, &receiver, counts.wrk_seconds, IDLE_CONNECTIONS);
    table.lameduck_row(
        &format!("the same, {IDLE_CONNECTIONS} idle connections held open"),
        flood_idle,
    );

    progress("drain timeline");
    let mut timelines = Vec::new();
    for load in [Background::None, Background::Wrk, Background::Idle] {
        timelines.push((
            load,
            timeline(lameduck, &receiver, load, counts.timeline_runs),
        ));
    }
    table.lameduck_row(
        "SIGTERM → /readyz 503, median / max: quiet; wrk flood; 1,000 idle",
        timelines
            .iter()
            .map(|(_, t)| t.readyz_cell())
            .collect::<Vec<_>>()
            .join("; "),
    );
    table.lameduck_row(
        &format!(
            "SIGTERM → app's stop signal minus the {} s delay, median / max: quiet; wrk flood; 1,000 idle",
            DRAIN_DELAY.as_secs()
        ),
        timelines
            .iter()
            .map(|(_, t)| t.stop_cell())
            .collect::<Vec<_>>()
            .join("; "),
    );

    println!("{}", table.render());
    println!();
    println!(
        "Startup includes `unshare --pid --fork` itself: {} with /bin/true as PID 1 and no init.",
        baseline.cell()
    );
    println!(
        "Ratios are lameduck ÷ tini (dynamic) and ÷ tini-static; a target is met only against both."
    );
    for (load, t) in &timelines {
        println!(
            "Drain timeline, {}: {} of {} runs; /readyz polled with a new connection per request.",
            load.label(),
            t.runs,
            counts.timeline_runs
        );
    }
}

/// Writes a progress line to stderr, so stdout holds only the results.
fn progress(what: &str) {
    eprintln!("footprint: {what}...");
}

/// The host path of `name`, from PATH.
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

/// The 1,000 idle connections need more descriptors than a 1024 soft limit (containers run with
/// a high one), and the processes started here inherit the raised limit.
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock both sides of a latency read.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into the timespec it is given, which outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The receiver: blocks SIGUSR1 and SIGTERM and takes them with sigwait, so a signal is seen
/// the moment it is delivered with no handler in between; prints `ready`, then one
/// `SIGNAL MONOTONIC_NS` line per signal, and exits 0 after SIGTERM.
fn receive() -> ! {
    let mut set = SigSet::empty();
    set.add(Signal::SIGUSR1);
    set.add(Signal::SIGTERM);
    set.thread_block().expect("block signals");
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    loop {
        let signal = set.wait().expect("sigwait");
        let at = monotonic_ns();
        writeln!(out, "{} {at}", signal.as_str())
            .and_then(|()| out.flush())
            .expect("stdout");
        if signal == Signal::SIGTERM {
            std::process::exit(0);
        }
    }
}

/// `unshare --pid --fork --mount-proc --kill-child ARGV`: one init as PID 1 of a fresh PID
/// namespace, its stdout (the app's) read line by line; killed with everything in it on drop.
struct Pod {
    process: Child,
    /// The init, as the host sees it.
    pid1: Pid,
    /// The app's stdout lines.
    lines: Receiver<String>,
    /// lameduck's log lines, when asked for.
    log: Option<Receiver<String>>,
}

impl Pod {
    fn start(argv: &[String], with_log: bool) -> Self {
        let mut process = pid1_command(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(if with_log {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("start unshare");
        let lines = Lines::follow(process.stdout.take().expect("stdout")).1;
        let log = process.stderr.take().map(|log| Lines::follow(log).1);
        let pid1 =
            pid1_of(&mut process).unwrap_or_else(|| panic!("no PID 1 under unshare for {argv:?}"));
        Pod {
            process,
            pid1,
            lines,
            log,
        }
    }

    /// The next stdout line, or None after `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Waits for the line `expected`, skipping others.
    fn expect(&self, expected: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while let Some(line) = self.line(deadline.saturating_duration_since(Instant::now())) {
            if line == expected {
                return;
            }
        }
        panic!("no {expected:?} line within {timeout:?}");
    }

    /// The endpoints' address from lameduck's `endpoints listening addr=...` log line.
    fn endpoints(&self) -> SocketAddr {
        let log = self.log.as_ref().expect("started with its log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Ok(line) = log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let addr = line
                .split_once("endpoints listening")
                .and_then(|(_, rest)| {
                    rest.split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                });
            if let Some(addr) = addr.and_then(|a| a.trim_matches('"').parse().ok()) {
                return addr;
            }
        }
        panic!("lameduck never said where it listens");
    }

    /// Waits up to `timeout` for the pod to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        poll_until(timeout, POLL, || {
            self.process.try_wait().ok().flatten().is_some()
        })
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // With --kill-child, unshare's death kills PID 1 and so the whole namespace.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// Mean and standard deviation of a hyperfine benchmark, in ms.
struct Timing {
    mean: f64,
    sd: f64,
}

impl Timing {
    fn cell(&self) -> String {
        format!("{:.2} ms ± {:.2}", self.mean, self.sd)
    }
}

/// `hyperfine -N` over `unshare --pid --fork WRAPPER -- /bin/true` for each wrapper, in one
/// invocation; also `unshare` with /bin/true alone, the floor every wrapper stands on.
fn startup(wrappers: &[Wrapper], counts: &Counts) -> (Vec<Timing>, Timing) {
    let mut commands: Vec<String> = wrappers
        .iter()
        .map(|w| {
            format!(
                "unshare --pid --fork {}",
                w.argv(&[], &["/bin/true"]).join(" ")
            )
        })
        .collect();
    commands.push("unshare --pid --fork /bin/true".into());
    let json =
        std::env::temp_dir().join(format!("footprint-hyperfine-{}.json", std::process::id()));
    let status = Command::new("hyperfine")
        .args(["-N", "--style", "basic", "--warmup"])
        .arg(counts.startup_warmup.to_string())
        .arg("--runs")
        .arg(counts.startup_runs.to_string())
        .arg("--export-json")
        .arg(&json)
        .args(&commands)
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .expect("run hyperfine");
    assert!(status.success(), "hyperfine failed");
    let text = std::fs::read_to_string(&json).expect("hyperfine's json");
    let _ = std::fs::remove_file(&json);
    let value: serde_json::Value = serde_json::from_str(&text).expect("hyperfine json");
    let mut timings: Vec<Timing> = value["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| Timing {
            mean: r["mean"].as_f64().expect("mean") * 1000.0,
            sd: r["stddev"].as_f64().unwrap_or(0.0) * 1000.0,
        })
        .collect();
    let baseline = timings.pop().expect("the baseline");
    (timings, baseline)
}

/// VmRSS and RssAnon of PID 1 one second after it started `sleep 1000`, in KiB.
fn idle_memory_kib(wrapper: &Wrapper) -> (f64, f64) {
    let pod = Pod::start(&wrapper.argv(&[], &["sleep", "1000"]), false);
    std::thread::sleep(Duration::from_secs(1));
    (
        status_kib(pod.pid1, "VmRSS").expect("VmRSS") as f64,
        status_kib(pod.pid1, "RssAnon").expect("RssAnon") as f64,
    )
}

/// A binary's size in bytes and what its ELF headers say: static or dynamic (a PT_INTERP
/// program header), stripped or not (a SHT_SYMTAB section).
fn binary(path: &Path) -> (f64, String) {
    let data = std::fs::read(path).expect("read the binary");
    let u16_at = |at: u64| -> u64 {
        data.get(at as usize..at as usize + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as u64)
    };
    let u32_at = |at: u64| -> u64 {
        data.get(at as usize..at as usize + 4).map_or(0, |b| {
            u32::from_le_bytes(b.try_into().expect("4 bytes")) as u64
        })
    };
    let u64_at = |at: u64| -> u64 {
        data.get(at as usize..at as usize + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // ELF64 header: e_phoff at 0x20, e_shoff 0x28, e_phentsize 0x36, e_phnum 0x38,
    // e_shentsize 0x3a, e_shnum 0x3c; p_type and sh_type are the first words of their entries
    // (sh_type after the 4-byte sh_name).
    let (phoff, shoff) = (u64_at(0x20), u64_at(0x28));
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let (shentsize, shnum) = (u16_at(0x3a), u16_at(0x3c));
    const PT_INTERP: u64 = 3;
    const SHT_SYMTAB: u64 = 2;
    let dynamic = (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP);
    let symbols = (0..shnum).any(|i| u32_at(shoff + i * shentsize + 4) == SHT_SYMTAB);
    let kind = format!(
        "{}, {}",
        if dynamic { "dynamic" } else { "static" },
        if symbols { "not stripped" } else { "stripped" }
    );
    (data.len() as f64, kind)
}

/// Bytes as KiB or MiB.
fn size_cell(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.0} KiB", bytes / 1024.0)
    }
}

const FORWARDING_TARGET: &str = "p50 ≤ 1.2× tini, p99 ≤ 300 µs";

/// Whether lameduck's latencies (the first) meet `FORWARDING_TARGET` against both tinis.
fn forwarding_met(latencies: &[Latency]) -> bool {
    let tini = latencies[1].p50.min(latencies[2].p50);
    latencies[0].p50 <= 1.2 * tini && latencies[0].p99 <= 300.0
}

/// Percentiles of one latency series, in µs.
struct Latency {
    p50: f64,
    p99: f64,
    /// Signals sent whose receipt never came.
    lost: usize,
}

impl Latency {
    fn of(mut samples: Vec<f64>, lost: usize) -> Self {
        samples.sort_by(f64::total_cmp);
        Latency {
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            lost,
        }
    }

    fn cell(&self) -> String {
        let lost = if self.lost > 0 {
            format!(", {} lost", self.lost)
        } else {
            String::new()
        };
        format!("{:.0} / {:.0} µs{lost}", self.p50, self.p99)
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Sends `signal` to the pod's PID 1 and returns the µs until the receiver saw it, or None when
/// it never did (within a second).
fn one_signal(pod: &Pod, signal: Signal) -> Option<f64> {
    let sent = monotonic_ns();
    kill(pod.pid1, signal).expect("kill PID 1");
    let deadline = Instant::now() + Duration::from_secs(1);
    while let Some(line) = pod.line(deadline.saturating_duration_since(Instant::now())) {
        let Some((name, at)) = line.split_once(' ') else {
            continue;
        };
        if name == signal.as_str() {
            let at: u64 = at.parse().expect("receipt time");
            return Some(at.saturating_sub(sent) as f64 / 1000.0);
        }
    }
    None
}

/// SIGUSR1 `count` times to one pod, each after the last one arrived, after a warm-up.
fn usr1_latency(wrapper: &Wrapper, receiver: &Path, count: usize) -> Latency {
    let pod = Pod::start(
        &wrapper.argv(&[], &[&receiver.display().to_string(), "receive"]),
        false,
    );
    pod.expect("ready", Duration::from_secs(10));
    let warmup = 50;
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0;
    for i in 0..warmup + count {
        match one_signal(&pod, Signal::SIGUSR1) {
            Some(us) if i >= warmup => samples.push(us),
            None if i >= warmup => lost += 1,
            _ => {}
        }
    }
    Latency::of(samples, lost)
}

/// SIGTERM to `count` fresh pods, one each (the receiver exits on it); lameduck with
/// `--shutdown-delay 0`, so the stop signal is what is timed.
fn term_latency(wrapper: &Wrapper, receiver: &Path, count: usize) -> Latency {
    let extra: &[&str] = if wrapper.is_lameduck() {
        &["--shutdown-delay", "0"]
    } else {
        &[]
    };
    let argv = wrapper.argv(extra, &[&receiver.display().to_string(), "receive"]);
    let mut samples = Vec::with_capacity(count);
    let mut lost = 0;
    for _ in 0..count {
        let mut pod = Pod::start(&argv, false);
        pod.expect("ready", Duration::from_secs(10));
        match one_signal(&pod, Signal::SIGTERM) {
            Some(us) => samples.push(us),
            None => lost += 1,
        }
        pod.wait_exit(Duration::from_secs(5));
    }
    Latency::of(samples, lost)
}

/// What reaping `ORPHANS` orphans cost one wrapper (medians over the runs).
struct Orphans {
    /// Orphans still there `REAP_BOUND` after the fixture made the last one (worst run).
    left: usize,
    /// From the fixture's last orphan to none left, ms; None when some were left.
    reaped_ms: Option<f64>,
    /// utime+stime of PID 1 from /proc/PID/stat, ms (10 ms ticks).
    cpu_ms: f64,
    /// The scheduler's count of PID 1's CPU time (/proc/PID/schedstat), ms: the same at ns
    /// resolution.
    sched_ms: f64,
}

impl Orphans {
    fn reap_cell(&self) -> String {
        match self.reaped_ms {
            Some(ms) => format!("{} / {ms:.0} ms", self.left),
            None => format!("{} / not within 2 s", self.left),
        }
    }

    fn cpu_cell(&self) -> String {
        format!("{:.0} ms ({:.1} ms)", self.cpu_ms, self.sched_ms)
    }
}

fn orphans(wrapper: &Wrapper, fixture: &Path, runs: usize) -> Orphans {
    let argv = wrapper.argv(
        &[],
        &[
            &fixture.display().to_string(),
            "orphans",
            &ORPHANS.to_string(),
        ],
    );
    let (mut left, mut reaped, mut cpu, mut sched) = (0, Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let pod = Pod::start(&argv, false);
        pod.expect(&format!("orphaned {ORPHANS}"), Duration::from_secs(120));
        let made = Instant::now();
        // Orphans are reparented to PID 1: every child of its but the fixture, which waits for
        // a signal after making them, is one, alive or a zombie not yet reaped.
        let orphans_left = || children(pod.pid1).len().saturating_sub(1);
        if poll_until(REAP_BOUND, POLL, || orphans_left() == 0) {
            reaped.push(made.elapsed().as_secs_f64() * 1000.0);
        }
        left = left.max(orphans_left());
        let (ticks, ns) = cpu_time_ms(pod.pid1);
        cpu.push(ticks);
        sched.push(ns);
    }
    Orphans {
        left,
        reaped_ms: (reaped.len() == runs).then(|| median(&mut reaped)),
        cpu_ms: median(&mut cpu),
        sched_ms: median(&mut sched),
    }
}

/// lameduck supervising the receiver, as PID 1, with its log read for its address.
fn lameduck_pod(lameduck: &Wrapper, receiver: &Path, delay: Duration) -> (Pod, SocketAddr) {
    let delay = format!("{}ms", delay.as_millis());
    let argv = lameduck.argv(
        &["--shutdown-delay", &delay],
        &[&receiver.display().to_string(), "receive"],
    );
    let pod = Pod::start(&argv, true);
    pod.expect("ready", Duration::from_secs(10));
    let addr = pod.endpoints();
    assert!(
        poll_until(Duration::from_secs(10), POLL, || status(addr, "/readyz")
            == Some(200)),
        "lameduck never became ready"
    );
    (pod, addr)
}

/// `wrk -t2 -c50 -d{seconds}s --latency` on /readyz, with `idle` connections held open
/// throughout; returns requests/s, p99 and any errors wrk counted.
fn wrk_flood(lameduck: &Wrapper, receiver: &Path, seconds: u64, idle: usize) -> String {
    let (_pod, addr) = lameduck_pod(lameduck, receiver, DRAIN_DELAY);
    let holder = (idle > 0).then(|| Holder::start(addr, idle, Duration::from_secs(seconds + 30)));
    let output = Command::new("wrk")
        .args(["-t2", "-c50", &format!("-d{seconds}s"), "--latency"])
        .arg(format!("http://{addr}/readyz"))
        .stdin(Stdio::null())
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    // wrk's full report, beside the table's summary of it.
    eprint!("{text}");
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN))
        .unwrap_or(f64::NAN);
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| "?".into());
    let mut cell = format!("{rate:.0}/s, p99 {p99}");
    for line in text.lines().map(str::trim) {
        if line.starts_with("Socket errors") || line.starts_with("Non-2xx") {
            cell.push_str(&format!("; {line}"));
        }
    }
    if let Some(holder) = holder {
        let opened = holder.opened;
        cell.push_str(&format!(
            "; {opened} idle connections made, {} closed by lameduck and made again",
            holder.stop()
        ));
    }
    cell
}

/// Keeps `count` connections open on `addr` without sending a byte, reopening each one the
/// server closes, until stopped or `max` has passed.
struct Holder {
    /// How many of the `count` connections were made at the start.
    opened: usize,
    stop: Arc<AtomicBool>,
    reopened: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

impl Holder {
    /// Makes the connections before returning, so a measurement starts with all of them open.
    fn start(addr: SocketAddr, count: usize, max: Duration) -> Self {
        // Up to 3 s each: lameduck's accept queue overflows on such a burst, and a dropped SYN
        // is sent again after a second.
        let mut held: Vec<Option<TcpStream>> = (0..count)
            .map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok())
            .collect();
        let opened = held.iter().flatten().count();
        let stop = Arc::new(AtomicBool::new(false));
        let reopened = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, reopened) = (Arc::clone(&stop), Arc::clone(&reopened));
            std::thread::spawn(move || {
                let deadline = Instant::now() + max;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                    for slot in held.iter_mut() {
                        if !slot.as_ref().is_some_and(still_open) {
                            *slot = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok();
                            reopened.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        };
        Holder {
            opened,
            stop,
            reopened,
            thread,
        }
    }

    /// Closes every connection; returns how many had to be reopened.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        self.reopened.load(Ordering::SeqCst)
    }
}

/// What runs against lameduck's endpoints during a drain-timeline run.
#[derive(Clone, Copy, Debug)]
enum Background {
    None,
    /// wrk's probe flood.
    Wrk,
    /// `IDLE_CONNECTIONS` idle connections held open.
    Idle,
}

impl Background {
    fn label(self) -> &'static str {
        match self {
            Background::None => "quiet",
            Background::Wrk => "wrk flood",
            Background::Idle => "1,000 idle connections",
        }
    }
}

/// Medians and maxima of the drain-timeline runs, in ms.
struct Timeline {
    runs: usize,
    readyz_ms: Vec<f64>,
    /// How much later than the delay the app got its stop signal.
    late_ms: Vec<f64>,
}

impl Timeline {
    fn readyz_cell(&self) -> String {
        median_max(&self.readyz_ms)
    }

    fn stop_cell(&self) -> String {
        median_max(&self.late_ms)
    }
}

fn median_max(samples: &[f64]) -> String {
    let mut sorted = samples.to_vec();
    let max = sorted.iter().copied().fold(f64::NAN, f64::max);
    format!("{:.1} / {max:.1} ms", median(&mut sorted))
}

/// SIGTERM to lameduck `runs` times (a fresh pod each) with `load` against its endpoints:
/// when /readyz first answered 503 (polled back to back), and when the app got its stop
/// signal compared with the configured delay.
fn timeline(lameduck: &Wrapper, receiver: &Path, load: Background, runs: usize) -> Timeline {
    let mut result = Timeline {
        runs: 0,
        readyz_ms: Vec::new(),
        late_ms: Vec::new(),
    };
    for _ in 0..runs {
        let (mut pod, addr) = lameduck_pod(lameduck, receiver, DRAIN_DELAY);
        let mut wrk = None;
        let mut holder = None;
        match load {
            Background::None => {}
            Background::Wrk => {
                let seconds = (DRAIN_DELAY + Duration::from_secs(4)).as_secs();
                wrk = Some(WrkProcess::start(addr, seconds));
            }
            Background::Idle => {
                holder = Some(Holder::start(
                    addr,
                    IDLE_CONNECTIONS,
                    Duration::from_secs(30),
                ));
            }
        }
        // Let the load reach its steady state before the SIGTERM.
        std::thread::sleep(Duration::from_secs(1));
        let sent = monotonic_ns();
        kill(pod.pid1, Signal::SIGTERM).expect("SIGTERM lameduck");
        let failing = poll_until(Duration::from_secs(5), POLL, || {
            status(addr, "/readyz") == Some(503)
        });
        let failed_at = monotonic_ns();
        let stopped = pod
            .line(DRAIN_DELAY + Duration::from_secs(5))
            .and_then(|line| line.strip_prefix("SIGTERM ")?.parse::<u64>().ok());
        if let (true, Some(stopped)) = (failing, stopped) {
            result.runs += 1;
            result.readyz_ms.push((failed_at - sent) as f64 / 1e6);
            result.late_ms.push(
                stopped.saturating_sub(sent) as f64 / 1e6 - DRAIN_DELAY.as_secs_f64() * 1000.0,
            );
        }
        drop(wrk);
        if let Some(holder) = holder {
            holder.stop();
        }
        pod.wait_exit(Duration::from_secs(5));
    }
    result
}

/// wrk in the background, killed by pid on drop.
struct WrkProcess(Child);

impl WrkProcess {
    fn start(addr: SocketAddr, seconds: u64) -> Self {
        let child = Command::new("wrk")
            .args(["-t2", "-c50", &format!("-d{seconds}s")])
            .arg(format!("http://{addr}/readyz"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wrk");
        WrkProcess(child)
    }
}

impl Drop for WrkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// lameduck's value ÷ each tini's, for the ratio columns.
fn ratios<T>(values: &[T], value: impl Fn(&T) -> f64) -> Vec<String> {
    let lameduck = value(&values[0]);
    [1, 2]
        .iter()
        .map(|&tini| format!("{:.2}×", lameduck / value(&values[tini])))
        .collect()
}

/// The one table the benchmark prints: a measure per row, a column per wrapper (lameduck, tini,
/// tini-static, dumb-init), lameduck's ratio to each tini, the target and whether it is met.
#[derive(Default)]
struct Table {
    rows: Vec<String>,
}

impl Table {
    fn row(
        &mut self,
        measure: &str,
        cells: Vec<String>,
        ratios: Vec<String>,
        target: &str,
        met: Option<bool>,
    ) {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        self.rows.push(format!(
            "| {measure} | {} | {} | {target} | {met} |",
            cells.join(" | "),
            ratios.join(" | ")
        ));
    }

    /// A row of p50 / p99 latencies, with both ratios in each ratio cell.
    fn latency_row(
        &mut self,
        measure: &str,
        latencies: &[Latency],
        target: &str,
        met: Option<bool>,
    ) {
        let ratios = ratios(latencies, |l| l.p50)
            .into_iter()
            .zip(ratios(latencies, |l| l.p99))
            .map(|(p50, p99)| format!("{p50} / {p99}"))
            .collect();
        self.row(
            measure,
            latencies.iter().map(Latency::cell).collect(),
            ratios,
            target,
            met,
        );
    }

    /// A row measured on lameduck alone.
    fn lameduck_row(&mut self, measure: &str, cell: String) {
        let mut cells = vec![cell];
        cells.resize(4, "—".into());
        self.row(measure, cells, vec!["—".into(), "—".into()], "—", None);
    }

    fn render(&self) -> String {
        let mut text = String::from(
            "| measure | lameduck | tini | tini-static | dumb-init | ÷ tini | ÷ tini-static | target | met |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            text.push_str(row);
            text.push('\n');
        }
        text
    }
}
