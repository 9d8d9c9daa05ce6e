//! What lameduck tells the outside world while it drains: /metrics that a real OpenMetrics
//! parser accepts, /status with the drain's progress, and one structured log line per phase
//! change in both log formats.

use std::process::Command;
use std::time::Duration;

use lameduck_test_support::binaries::fixture;
use lameduck_test_support::http::get;
use lameduck_test_support::process::{Lameduck, Mode, wait_until};
use nix::sys::signal::Signal;

const SECOND: Duration = Duration::from_secs(1);

/// Parses an OpenMetrics exposition with the Python reference client's strict parser and
/// returns `name{labels} value` lines for every sample.
fn parse_openmetrics(text: &str) -> Vec<String> {
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs prometheus-client)");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed parser");
    let output = child.wait_with_output().expect("parser");
    assert!(
        output.status.success(),
        "the OpenMetrics parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn metrics_parse_as_openmetrics_and_count_the_drain() {
    let fixture = fixture();
    let mut run = Lameduck::start(
        Mode::Subreaper,
        &[
            "--shutdown-delay",
            "0",
            "--drain-timeout",
            "500ms",
            "--",
            &fixture,
            "signals",
            "--exit-on",
            "none",
        ],
    );
    run.expect_ready();
    let addr = run.ready_addr();
    run.signal(Signal::SIGUSR1);
    run.expect_exact("USR1");
    run.signal(Signal::SIGHUP);
    run.expect_exact("HUP");

    let samples = parse_openmetrics(&get(addr, "/metrics").1);
    let has = |line: &str| samples.iter().any(|s| s == line);
    assert!(has(r#"lameduck_phase{phase="ready"} 1"#), "{samples:#?}");
    assert!(has(r#"lameduck_phase{phase="draining"} 0"#), "{samples:#?}");
    assert!(
        has(r#"lameduck_signals_forwarded_total{signal="USR1"} 1"#),
        "{samples:#?}"
    );
    assert!(
        has(r#"lameduck_signals_forwarded_total{signal="HUP"} 1"#),
        "{samples:#?}"
    );
    assert!(has(r#"lameduck_forced_kills_total{} 0"#), "{samples:#?}");
    assert!(has(r#"lameduck_app_ready{} 1"#), "{samples:#?}");
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with(r#"lameduck_phase_seconds{phase="ready"}"#))
    );

    // The app ignores its stop signal, so the drain timeout kills it: the kill is counted,
    // and the phase the scrape sees is the one lameduck is in.
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    assert!(wait_until(5 * SECOND, || {
        parse_openmetrics(&get(addr, "/metrics").1)
            .iter()
            .any(|s| s == r#"lameduck_phase{phase="stopping"} 1"#)
    }));
    assert_eq!(run.wait_exit(5 * SECOND), 137);
}

#[test]
fn status_shows_the_time_left_in_the_delay() {
    let fixture = fixture();
    let mut run = Lameduck::start(
        Mode::Subreaper,
        &["--shutdown-delay", "1m", "--", &fixture, "signals"],
    );
    run.expect_ready();
    let addr = run.ready_addr();
    let before: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).expect("json");
    assert!(before["delay_left_ms"].is_null());
    run.signal(Signal::SIGTERM);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
    let during: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).expect("json");
    let left = during["delay_left_ms"]
        .as_u64()
        .expect("delay_left_ms while draining");
    assert!(left > 50_000 && left <= 60_000, "{left}");
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
}

#[test]
fn every_phase_change_is_one_json_log_line_with_its_fields() {
    let fixture = fixture();
    let mut run = Lameduck::start(
        Mode::Pid1,
        &[
            "--log-format",
            "json",
            "--shutdown-delay",
            "200ms",
            "--",
            &fixture,
            "signals",
        ],
    );
    run.expect_ready();
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    let changes: Vec<serde_json::Value> = run
        .stderr
        .all()
        .iter()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|_| panic!("not JSON: {line}"))
        })
        .filter(|entry| entry["message"] == "phase changed")
        .collect();
    let phases: Vec<&str> = changes.iter().filter_map(|c| c["phase"].as_str()).collect();
    assert_eq!(phases, ["ready", "draining", "stopping", "exited"]);
    for change in &changes {
        for field in ["reason", "elapsed_ms", "pid", "level", "timestamp"] {
            assert!(!change[field].is_null(), "{field} missing in {change}");
        }
    }
    assert_eq!(changes[1]["reason"], "SIGTERM");
    assert_eq!(changes[2]["reason"], "shutdown delay elapsed");
}

#[test]
fn every_phase_change_is_one_text_log_line_with_its_fields() {
    let fixture = fixture();
    let mut run = Lameduck::start(
        Mode::Subreaper,
        &["--shutdown-delay", "0", "--", &fixture, "signals"],
    );
    run.expect_ready();
    run.signal(Signal::SIGINT);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    let lines: Vec<String> = run
        .stderr
        .all()
        .into_iter()
        .filter(|l| l.contains("phase changed"))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[1].contains("phase=draining")
            && lines[1].contains("reason=SIGINT")
            && lines[1].contains("pid=")
    );
    assert!(lines.iter().all(|l| l.contains("elapsed_ms=")));
}
