//! The serving certificate: loading a PEM chain and key, and handing rustls whichever pair is
//! current. A poller re-reads the files every second and swaps in a new pair when their bytes
//! change, as they do when cert-manager rotates a Secret that the kubelet has mounted as a
//! volume. Handshakes in flight keep the pair they started with; the next one gets the new pair.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How often the certificate files are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Where the serving certificate chain and its private key are, both PEM.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The bytes of both files as last read: a change in either means a reload.
#[derive(PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl CertFiles {
    fn read(&self) -> Result<Contents, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
        };
        Ok(Contents {
            cert: read(&self.cert)?,
            key: read(&self.key)?,
        })
    }
}

/// Parses a chain and key, and checks that the key belongs to the first certificate (a
/// half-written rotation, new certificate with old key, must not be served).
fn certified_key(
    files: &CertFiles,
    contents: &Contents,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_slice_iter(&contents.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| {
            format!(
                "{}: not a PEM certificate chain: {err}",
                files.cert.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(&contents.key)
        .map_err(|err| format!("{}: not a PEM private key: {err}", files.key.display()))?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        format!(
            "{} and {} do not make a serving pair: {err}",
            files.cert.display(),
            files.key.display()
        )
    })
}

/// The pair rustls serves, swapped in place on rotation.
#[derive(Debug)]
pub struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock still holds a whole pair: the writer only ever assigns an Arc.
        let current = match self.current.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&current))
    }
}

impl Resolver {
    fn swap(&self, key: CertifiedKey) {
        let mut current = match self.current.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *current = Arc::new(key);
    }
}

/// The poller that keeps the served pair current: the files, what was last loaded, and where
/// to put a new pair.
pub struct Reloader {
    files: CertFiles,
    loaded: Contents,
    resolver: Arc<Resolver>,
    provider: Arc<CryptoProvider>,
}

/// Loads the pair once (a missing or bad pair at start is a configuration error) and returns
/// the rustls configuration that serves it, with the poller that will keep it current.
pub fn load(files: CertFiles) -> Result<(Arc<rustls::ServerConfig>, Reloader), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let loaded = files.read()?;
    let key = certified_key(&files, &loaded, &provider)?;
    let resolver = Arc::new(Resolver {
        current: RwLock::new(Arc::new(key)),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let reloader = Reloader {
        files,
        loaded,
        resolver,
        provider,
    };
    Ok((Arc::new(config), reloader))
}

impl Reloader {
    /// Re-reads the files every [`RELOAD_EVERY`] for as long as the server runs. A pair that
    /// cannot be read or does not match is logged and skipped: the old one keeps serving, and
    /// the next poll tries again (the key may simply not be written yet).
    pub fn spawn(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match self.poll() {
                    Ok(false) => failing = false,
                    Ok(true) => {
                        failing = false;
                        tracing::info!(cert = %self.files.cert.display(), "serving certificate reloaded");
                    }
                    // Once per failure, not once a second.
                    Err(err) if !failing => {
                        failing = true;
                        tracing::warn!(error = %err, "serving certificate not reloaded; the previous one stays");
                    }
                    Err(_) => {}
                }
            }
        })
    }

    /// One poll: whether a new pair was swapped in.
    fn poll(&mut self) -> Result<bool, String> {
        let contents = self.files.read()?;
        if contents == self.loaded {
            return Ok(false);
        }
        let key = certified_key(&self.files, &contents, &self.provider)?;
        self.resolver.swap(key);
        self.loaded = contents;
        Ok(true)
    }
}
