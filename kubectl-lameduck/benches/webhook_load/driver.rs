//! The webhook under load: 1,000 reviews a second for 10 s from a loopback generator, each a
//! pod create that is injected (the heaviest answer), over 10 kept HTTPS connections. Prints
//! the latency percentiles seen by the client and the server's peak RSS. Run by
//! benches/webhook.sh; a benchmark, not a test.

#[path = "../../tests/common/webhook.rs"]
mod webhook;

use std::time::{Duration, Instant};

use webhook::{Ca, Client, SecretVolume, Webhook, scratch};

const CONNECTIONS: usize = 10;
const PER_CONNECTION_PER_SECOND: u64 = 100;
const SECONDS: u64 = 10;

fn peak_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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
    let (mut latencies, failed) = results;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("| reviews | failed | rate/s | p50 ms | p99 ms | max ms | server peak RSS |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {failed} | {:.0} | {:.2} | {:.2} | {:.2} | {} KiB |",
        latencies.len(),
        latencies.len() as f64 / SECONDS as f64,
        ms(at(0.50)),
        ms(at(0.99)),
        ms(*latencies.last().unwrap()),
        peak_rss_kib(server.pid())
    );
}
