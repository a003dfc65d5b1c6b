//! TLS for [`HubServer`](super::HubServer): `wss://` and `https://` on the
//! listen port, rustls with the ring provider.
//!
//! ```text
//!  TcpStream ─► TlsAcceptor (handshake, bounded) ─► hyper http1 ─► routes / upgrade
//!                   │ certificate from
//!                   ▼
//!  Resolver: RwLock<Arc<CertifiedKey>> ◄── reload(): re-read the PEM files,
//!                                          swap on success, keep on failure
//! ```
//!
//! A reload changes the certificate for handshakes that start after it;
//! connections already up keep theirs (TLS never re-authenticates a
//! session), so connected peers stay connected.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

use super::Inner;

/// A certificate or key the server cannot use.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file cannot be read, is not PEM or holds no
    /// `CERTIFICATE` block.
    #[error("TLS certificate file {}: {reason}", path.display())]
    CertFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file cannot be read, holds no private key, or holds one the
    /// ring provider cannot use.
    #[error("TLS key file {}: {reason}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate.
    #[error("TLS key file {} does not match certificate {}: {reason}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reports.
        reason: String,
    },
    /// [`HubServer::reload_tls`](super::HubServer::reload_tls) on a server
    /// without TLS, or with a certificate given in memory (no files to
    /// re-read).
    #[error("TLS reload: {0}")]
    NotReloadable(&'static str),
}

impl TlsError {
    /// A stable code: `TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_KEY_MISMATCH`
    /// or `TLS_NOT_RELOADABLE`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CertFile { .. } => "TLS_CERT_FILE",
            Self::KeyFile { .. } => "TLS_KEY_FILE",
            Self::KeyMismatch { .. } => "TLS_KEY_MISMATCH",
            Self::NotReloadable(_) => "TLS_NOT_RELOADABLE",
        }
    }
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Memory,
}

/// The server's certificate chain and private key, checked when loaded.
/// Give it to [`HubServerBuilder::tls`](super::HubServerBuilder::tls).
#[derive(Clone)]
pub struct TlsConfig {
    source: Source,
    key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of it.
        f.debug_struct("TlsConfig")
            .field("source", &self.source)
            .field("chain_len", &self.key.cert.len())
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first, then intermediates) and a
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Fails, naming the file,
    /// when one cannot be read or used, or when the key is not the
    /// certificate's. These files are re-read by
    /// [`HubServer::reload_tls`](super::HubServer::reload_tls).
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let (cert, key) = (cert.as_ref().to_owned(), key.as_ref().to_owned());
        let certified = load_files(&cert, &key)?;
        Ok(Self {
            source: Source::Files { cert, key },
            key: Arc::new(certified),
        })
    }

    /// Like [`from_pem_files`](Self::from_pem_files) from PEM text in
    /// memory (such a certificate cannot be reloaded). Errors name the
    /// files as `<memory>`.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let memory = Path::new("<memory>");
        let certified = certified_key(memory, cert_pem, memory, key_pem)?;
        Ok(Self {
            source: Source::Memory,
            key: Arc::new(certified),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::CertFile {
        path: cert.to_owned(),
        reason: e.to_string(),
    })?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::KeyFile {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    certified_key(cert, &cert_pem, key, &key_pem)
}

fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let cert_err = |reason: String| TlsError::CertFile {
        path: cert_path.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsError::KeyFile {
        path: key_path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => key_err("no PRIVATE KEY block".into()),
        other => key_err(format!("not valid PEM: {other}")),
    })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_err(format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
                reason: "the key's public half is not the certificate's".into(),
            })
        }
        Err(e) => Err(cert_err(format!("unusable certificate: {e}"))),
    }
}

/// The certificate every new handshake gets; swapped by a reload.
#[derive(Debug)]
struct Resolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// What the server keeps: the acceptor, and what a reload needs.
pub(crate) struct Tls {
    source: Source,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Tls {
    pub(crate) fn new(config: TlsConfig) -> Result<Self, rustls::Error> {
        let resolver = Arc::new(Resolver {
            current: RwLock::new(config.key),
        });
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            source: config.source,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        })
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// Re-reads the files; swaps the certificate on success, keeps the old
    /// one (and logs an error) on failure.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let Source::Files { cert, key } = &self.source else {
            return Err(TlsError::NotReloadable(
                "the certificate was given in memory",
            ));
        };
        match load_files(cert, key) {
            Ok(certified) => {
                *self
                    .resolver
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; keeping the current certificate");
                Err(error)
            }
        }
    }
}

/// Spawns the task that reloads the certificate on SIGHUP (with `sighup`,
/// Unix only) and, with `watch`, when the files' contents change (checked
/// at that interval). `None` when there is nothing to do: no TLS, a
/// certificate from memory, or neither trigger.
pub(crate) fn spawn_reloader(
    server: Weak<Inner>,
    sighup: bool,
    watch: Option<Duration>,
) -> std::io::Result<Option<JoinHandle<()>>> {
    let Some(inner) = server.upgrade() else {
        return Ok(None);
    };
    let Some(tls) = &inner.service.settings.tls else {
        return Ok(None);
    };
    let Source::Files { cert, key } = &tls.source else {
        return Ok(None);
    };
    let mut hangup = if sighup { hangup()? } else { None };
    if hangup.is_none() && watch.is_none() {
        return Ok(None);
    }
    let (cert, key) = (cert.clone(), key.clone());
    drop(inner);
    // What the files held when last looked at, loaded or not: a change is
    // tried once, so a broken file is reported once, not at every tick.
    let mut seen = contents(&cert, &key);
    let mut ticks = watch.map(|every| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    Ok(Some(tokio::spawn(async move {
        loop {
            let trigger = tokio::select! {
                Some(()) = next_hangup(&mut hangup), if hangup.is_some() => "SIGHUP",
                _ = tick(&mut ticks), if ticks.is_some() => {
                    let now = contents(&cert, &key);
                    if now.is_none() || now == seen {
                        continue;
                    }
                    seen = now;
                    "file change"
                }
                else => return,
            };
            let Some(inner) = server.upgrade() else {
                return;
            };
            if let Some(tls) = &inner.service.settings.tls {
                tracing::info!(trigger, "reloading the TLS certificate");
                // `reload` logs its own failure.
                let _ = tls.reload();
            }
        }
    })))
}

/// Both files' bytes, or `None` while one cannot be read.
fn contents(cert: &Path, key: &Path) -> Option<(Vec<u8>, Vec<u8>)> {
    Some((std::fs::read(cert).ok()?, std::fs::read(key).ok()?))
}

async fn tick(ticks: &mut Option<tokio::time::Interval>) {
    match ticks {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = std::convert::Infallible;

#[cfg(unix)]
fn hangup() -> std::io::Result<Option<Hangup>> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup()).map(Some)
}

#[cfg(not(unix))]
fn hangup() -> std::io::Result<Option<Hangup>> {
    Ok(None)
}

/// The next SIGHUP; `None` once the stream has ended.
async fn next_hangup(hangup: &mut Option<Hangup>) -> Option<()> {
    match hangup {
        #[cfg(unix)]
        Some(h) => h.recv().await,
        #[cfg(not(unix))]
        Some(never) => match *never {},
        None => std::future::pending().await,
    }
}
