//! The admission webhook's harness, for the plugin's tests and its load benchmark (the
//! `webhook` feature): a CA and serving certificates made with rcgen, laid out as the kubelet
//! mounts a Secret, the built `kubectl-lameduck webhook` started on a free loopback port, and an
//! HTTPS client that verifies the server against that CA.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, ServerName};

use crate::temp::TempDir;

/// The name the client asks for; the serving certificates carry it with the Service's name.
const SERVER_NAME: &str = "lameduck-webhook.lameduck.svc";

/// A certificate authority, as cert-manager's Issuer would be.
pub struct Ca {
    pub cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

/// A serving pair in PEM, and its leaf in DER (to tell which pair a server presented).
pub struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
    pub leaf: CertificateDer<'static>,
}

impl Ca {
    /// A fresh CA with a new key.
    pub fn generate() -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A fresh serving pair for the webhook's Service name.
    pub fn serving(&self) -> Serving {
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_owned(), "localhost".to_owned()]).unwrap();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Serving {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            leaf: cert.der().clone(),
        }
    }
}

/// A Secret volume as the kubelet lays it out, in a temp dir named `label`: `tls.crt` and
/// `tls.key` are symlinks into `..data`, itself a symlink to a timestamped folder that an update
/// replaces in one rename.
pub struct SecretVolume {
    dir: TempDir,
    generation: u32,
}

impl SecretVolume {
    pub fn new(label: &str, pair: &Serving) -> SecretVolume {
        let mut volume = SecretVolume {
            dir: TempDir::new(label),
            generation: 0,
        };
        volume.update(pair);
        for name in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.path().join(name))
                .unwrap();
        }
        volume
    }

    /// The volume's folder, where the kubelet would mount it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    /// Writes the pair into a new folder and swaps `..data` to it atomically, as the kubelet
    /// does when cert-manager rotates the Secret.
    pub fn update(&mut self, pair: &Serving) {
        self.generation += 1;
        let folder = format!("..{}", self.generation);
        let dir = self.dir.path();
        let data = dir.join(&folder);
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("tls.crt"), &pair.cert_pem).unwrap();
        std::fs::write(data.join("tls.key"), &pair.key_pem).unwrap();
        let link = dir.join("..data_tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&folder, &link).unwrap();
        std::fs::rename(&link, dir.join("..data")).unwrap();
    }
}

/// The running webhook: killed (by its PID) when dropped.
pub struct Webhook {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Webhook {
    /// Starts `PLUGIN webhook` (the built kubectl-lameduck) on a free loopback port and waits
    /// until it listens.
    pub fn start(plugin: &Path, cert: &Path, key: &Path, extra: &[&str]) -> Webhook {
        let mut child = Command::new(plugin)
            .arg("webhook")
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl-lameduck webhook");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        let addr = loop {
            let found = log.lock().unwrap().iter().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                (entry["message"] == "webhook listening")
                    .then(|| entry["addr"].as_str()?.parse().ok())
                    .flatten()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the webhook exited {status}: {:?}", log.lock().unwrap());
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the webhook did not listen within 10s: {:?}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Webhook { child, addr, log }
    }

    /// Every log line so far, parsed.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}"))
            })
            .collect()
    }

    /// Whether a log line matching `wanted` appears within 5s (the reader thread lags a little).
    pub fn logged(&self, wanted: impl Fn(&serde_json::Value) -> bool) -> bool {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if self.log().iter().any(&wanted) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Waits for the process to exit, at most `timeout`; its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTPS connection to the webhook, verified against `ca`.
pub struct Client {
    sender: SendRequest<Full<Bytes>>,
    /// The leaf certificate the server presented on this connection.
    pub served: CertificateDer<'static>,
}

/// What the server answered.
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).map_err(|e| e.to_string())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let served = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .ok_or("no certificate served")?
            .clone()
            .into_owned();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(connection);
        Ok(Client { sender, served })
    }

    pub async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("not ready: {e}"))?;
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", SERVER_NAME)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Reply { status, body })
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<Reply, String> {
        self.send("POST", path, body).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Reply, String> {
        self.send("GET", path, Vec::new()).await
    }
}
