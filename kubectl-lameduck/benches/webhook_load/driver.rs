//! The webhook under load: 1,000 reviews a second for 10 s from a loopback generator, each a
//! pod create that is injected (the heaviest answer), over 20 kept HTTPS connections (the API
//! server keeps several too). Prints the latency percentiles seen by the client, the server's
//! peak RSS, the CPU time one review costs the server and the generator, and the machine's
//! load average, since on a shared machine latency is mostly waiting for a core. Run by
//! benches/webhook.sh; a benchmark, not a test.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lameduck_test_support::process::{cpu_time_ms, status_kib};
use lameduck_test_support::webhook::{Ca, Client, SecretVolume, Webhook};
use nix::unistd::Pid;

const CONNECTIONS: usize = 20;
const PER_CONNECTION_PER_SECOND: u64 = 50;
const SECONDS: u64 = 10;

/// CPU time (user and system) a process has used, in ms.
fn cpu_ms(pid: Pid) -> f64 {
    cpu_time_ms(pid).0
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
    // benches/webhook.sh names the release build it made.
    let plugin = std::env::var_os("KUBECTL_LAMEDUCK").map_or_else(
        || PathBuf::from("target/release/kubectl-lameduck"),
        PathBuf::from,
    );
    let ca = Ca::generate();
    let volume = SecretVolume::new("webhook-bench", &ca.serving());
    let server = Webhook::start(&plugin, &volume.cert(), &volume.key(), &[]);
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
    let server_pid = Pid::from_raw(server.pid());
    let load_before = load_average();
    let (server_cpu, own_cpu) = (cpu_ms(server_pid), cpu_ms(Pid::this()));
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
    let server_cpu = cpu_ms(server_pid) - server_cpu;
    let own_cpu = cpu_ms(Pid::this()) - own_cpu;
    let load_after = load_average();
    let (mut latencies, failed) = results;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per_review = |cpu_ms: f64| cpu_ms / latencies.len().max(1) as f64;
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
        status_kib(server_pid, "VmHWM").unwrap_or(0),
        per_review(server_cpu),
        per_review(own_cpu),
    );
}
