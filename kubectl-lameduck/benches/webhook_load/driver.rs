//! The webhook under load: 1,000 reviews a second for 10 s from a loopback generator, each a
//! pod create that is injected (the heaviest answer), over 20 kept HTTPS connections (the API
//! server keeps several too). Prints the latency percentiles seen by the client, the server's
//! peak RSS, the CPU time one review costs the server and the generator, and the machine's
//! load average, since on a shared machine latency is mostly waiting for a core. Run by
//! benches/webhook.sh; a benchmark, not a test.

#[path = "../../tests/common/webhook.rs"]
mod webhook;

use std::time::{Duration, Instant};

use webhook::{Ca, Client, SecretVolume, Webhook, scratch};

const CONNECTIONS: usize = 20;
const PER_CONNECTION_PER_SECOND: u64 = 50;
const SECONDS: u64 = 10;

fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time (user and system) a process has used, from /proc/PID/stat.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn main() {
    let ca = Ca::new();
    let volume = SecretVolume::new(&scratch("webhook-bench"), &ca.serving());
    let server = Webhook::start(&volume.cert(), &volume.key(), &[]);
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/admission/nginx-pod-create.json"
    ))
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (addr, cert) = (server.addr, ca.cert.clone());
    let server_pid = server.pid().to_string();
    let load_before = load_average();
    let (server_cpu, own_cpu) = (cpu_seconds(&server_pid), cpu_seconds("self"));
    let results = rt.block_on(async move {
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (cert, body) = (cert.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(addr, &cert).await.unwrap();
                let mut tick =
                    tokio::time::interval(Duration::from_millis(1000 / PER_CONNECTION_PER_SECOND));
                let mut latencies = Vec::new();
                let mut failed = 0usize;
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(SECONDS) {
                    tick.tick().await;
                    let sent = Instant::now();
                    match client.post("/mutate", body.clone()).await {
                        Ok(reply) if reply.status == 200 && reply.body.contains(&b'p') => {
                            latencies.push(sent.elapsed())
                        }
                        _ => failed += 1,
                    }
                }
                (latencies, failed)
            }));
        }
        let mut all = Vec::new();
        let mut failed = 0;
        for task in tasks {
            let (latencies, f) = task.await.unwrap();
            all.extend(latencies);
            failed += f;
        }
        (all, failed)
    });
    let server_cpu = cpu_seconds(&server_pid) - server_cpu;
    let own_cpu = cpu_seconds("self") - own_cpu;
    let load_after = load_average();
    let (mut latencies, failed) = results;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_review = |cpu: f64| cpu * 1000.0 / latencies.len().max(1) as f64;
    println!(
        "| reviews | failed | rate/s | p50 ms | p99 ms | max ms | server peak RSS | server CPU/review | generator CPU/review | load average (1 min) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {failed} | {:.0} | {:.2} | {:.2} | {:.2} | {} KiB | {:.3} ms | {:.3} ms | {load_before} → {load_after} |",
        latencies.len(),
        latencies.len() as f64 / SECONDS as f64,
        ms(at(0.50)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap()),
        peak_rss_kib(server.pid()),
        per_review(server_cpu),
        per_review(own_cpu),
    );
}
