//! The command `webhook`: a mutating admission webhook that injects lameduck into every pod
//! that is opted in, with `inject`'s own code, over HTTPS.
//!
//! # Layout
//! - `review` owns the AdmissionReview wire format: checking a body, writing an answer.
//! - `admit` owns the decision for one request: opted in or not, and the patch.
//! - `tls` owns the serving certificate and its reload on rotation.
//! - `server` owns connections, routing, request bounds and the graceful stop.
//! - `metrics` owns `/metrics`.

mod admit;
mod metrics;
mod review;
mod server;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use clap::Args;
use lameduck::cli::{LogArgs, LogFormat, LogLevel};

use crate::{EXIT_USAGE, inject, say};

/// Flags of `kubectl lameduck webhook`.
#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// The serving certificate chain, PEM (re-read when it changes).
    #[arg(long, value_name = "FILE")]
    tls_cert: PathBuf,

    /// The serving certificate's private key, PEM (re-read when it changes).
    #[arg(long, value_name = "FILE")]
    tls_key: PathBuf,

    /// The address to serve HTTPS on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// The cluster's defaults: what a pod gets unless its annotations say otherwise.
    #[command(flatten)]
    settings: inject::SettingArgs,

    /// The least severe log level written (logs are JSON, one object per line).
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log_level: LogLevel,
}

/// Runs the webhook until SIGTERM or SIGINT; returns the exit code.
pub fn run(args: WebhookArgs) -> i32 {
    lameduck::logging::init(&LogArgs {
        log_format: LogFormat::Json,
        log_level: Some(args.log_level),
    });
    let fail = |code: i32, line: String| {
        say(format_args!("kubectl-lameduck: webhook: {line}"));
        code
    };
    let options = args.settings.options();
    let (config, reloader) = match tls::load(tls::CertFiles {
        cert: args.tls_cert,
        key: args.tls_key,
    }) {
        Ok(loaded) => loaded,
        Err(line) => return fail(EXIT_USAGE, line),
    };
    // Two workers: enough for thousands of reviews a second, and a small footprint.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(1, format!("cannot start the runtime: {err}")),
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                return fail(
                    EXIT_USAGE,
                    format!("cannot listen on {}: {err}", args.listen),
                );
            }
        };
        let addr = listener.local_addr().map_or(args.listen, |a| a);
        let stop = match stop_signal() {
            Ok(stop) => stop,
            Err(err) => return fail(1, format!("cannot watch for signals: {err}")),
        };
        let _reloader = reloader.spawn();
        let state = Arc::new(server::State {
            metrics: metrics::Metrics::new(),
            options,
            stopping: AtomicBool::new(false),
        });
        tracing::info!(%addr, "webhook listening");
        server::serve(listener, config, state, stop).await;
        tracing::info!("webhook stopped");
        0
    })
}

/// Resolves on the first SIGTERM or SIGINT.
fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
