//! The in-pod preStop hook: an abstract Unix socket that lameduck listens on, and
//! `lameduck prestop`, the client an `exec` hook runs. An abstract socket belongs to the
//! network namespace, which every container of a pod shares and nothing outside it reaches,
//! so the call needs no credentials. The exchange is one line each way: the client sends
//! `prestop`, lameduck answers with the phase it reached once the hook may return (the stop
//! signal sent for the wrapper, the app exited for the sidecar).

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener as StdListener, UnixStream as StdStream};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::cli::PrestopArgs;
use crate::hooks::Hooks;

/// The request line.
const REQUEST: &str = "prestop";
/// A caller must send its request line within this time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest request line read.
const MAX_REQUEST: u64 = 64;
/// Exit code of `lameduck prestop` when no lameduck answered.
const EXIT_NO_ANSWER: i32 = 1;

/// Binds the hook socket; a name already taken in this network namespace is a configuration
/// error (another lameduck in the pod needs its own `--prestop-socket`).
pub fn bind(name: &str) -> Result<UnixListener, String> {
    let listen = || {
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let listener = StdListener::bind_addr(&addr)?;
        listener.set_nonblocking(true)?;
        UnixListener::from_std(listener)
    };
    listen().map_err(|err| {
        format!("cannot listen on the hook socket @{name}: {err} (another lameduck in this pod? give each its own --prestop-socket)")
    })
}

/// Answers hook calls until the runtime shuts down. A held call is never closed by lameduck.
pub async fn serve(listener: UnixListener, hooks: Hooks) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let hooks = hooks.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &hooks).await {
                tracing::debug!(%err, "hook socket call ended early");
            }
        });
    }
}

/// One call: read `prestop`, hold the hook while watching for the caller to go away, answer.
async fn answer(stream: UnixStream, hooks: &Hooks) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut read = AsyncBufReader::new(read.take(MAX_REQUEST));
    let mut line = String::new();
    tokio::time::timeout(REQUEST_TIMEOUT, read.read_line(&mut line)).await??;
    if line.trim_end() != REQUEST {
        write.write_all(b"unknown request\n").await?;
        return Ok(());
    }
    let mut rest = [0u8; 1];
    // The caller sends nothing more: a read that ends means it is gone, and the hook broke.
    let gone = async { while read.get_mut().get_mut().read(&mut rest).await.unwrap_or(0) > 0 {} };
    let phase = tokio::select! {
        phase = hooks.call("socket") => phase,
        () = gone => return Ok(()),
    };
    write
        .write_all(format!("{}\n", phase.name()).as_bytes())
        .await
}

/// `lameduck prestop`: calls the lameduck of this pod and waits for its answer; 0 once it
/// came, 1 with one line on stderr when no lameduck answered.
pub fn run(args: PrestopArgs) -> i32 {
    let name = &args.socket.resolve(args.listen.addr.port());
    match call(name) {
        Ok(phase) => {
            crate::exit::say(
                std::io::stdout(),
                format_args!("lameduck prestop: lameduck answered: {phase}"),
            );
            0
        }
        Err(err) => {
            crate::exit::say(
                std::io::stderr(),
                format_args!("lameduck prestop: no answer from lameduck on @{name}: {err}"),
            );
            EXIT_NO_ANSWER
        }
    }
}

/// One call over the socket; the phase lameduck answered with.
fn call(name: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let mut stream = StdStream::connect_addr(&addr)?;
    stream.write_all(format!("{REQUEST}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    let phase = answer.trim_end();
    if phase.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the connection closed before the answer",
        ));
    }
    Ok(phase.to_owned())
}
