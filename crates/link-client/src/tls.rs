//! TLS for `wss://` hub URLs: rustls with the ring provider, trusting the
//! system's root certificates (`rustls-native-certs`) plus any private CA
//! given with [`ClientConfigBuilder::ca_file`](crate::ClientConfigBuilder::ca_file)
//! or [`root_certificates`](crate::ClientConfigBuilder::root_certificates).
//!
//! ```text
//!  system roots ──┐
//!                 ├─► RootCertStore ──► rustls::ClientConfig (ring) ──► Connector::Rustls
//!  ca_file(PEM) ──┘        built once, in ClientConfigBuilder::build()
//! ```
//!
//! A CA is checked when it is loaded (PEM parsed, every certificate usable
//! as a trust anchor), so a bad file fails there, naming the file, and not
//! at every connect. Finding no system roots is not an error: a link to a
//! hub with a private CA needs none.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Extra trust anchors for `wss://` (typically a private CA), on top of the
/// system's roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RootCertificates {
    certs: Vec<CertificateDer<'static>>,
}

impl RootCertificates {
    /// Reads every `CERTIFICATE` block of a PEM file. Fails, naming the
    /// file, when it cannot be read, is not PEM, holds no certificate, or
    /// holds one that cannot be a trust anchor.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| TlsConfigError::CaFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_pem(&bytes).map_err(|e| match e {
            TlsConfigError::CaPem { reason } => TlsConfigError::CaFile {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Reads every `CERTIFICATE` block of PEM text (other blocks are
    /// skipped). Fails when there is none or one is unusable.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsConfigError::CaPem {
                reason: format!("not valid PEM: {e}"),
            })?;
        if certs.is_empty() {
            return Err(TlsConfigError::CaPem {
                reason: "no CERTIFICATE block".into(),
            });
        }
        Self::checked(certs)
    }

    /// DER-encoded certificates. Fails when one is unusable as a trust anchor.
    pub fn from_der(certs: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, TlsConfigError> {
        Self::checked(certs.into_iter().map(CertificateDer::from).collect())
    }

    fn checked(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsConfigError> {
        let mut store = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            store.add(cert.clone()).map_err(|e| TlsConfigError::CaPem {
                reason: format!("certificate {}: {e}", i + 1),
            })?;
        }
        Ok(Self { certs })
    }

    /// How many certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    pub(crate) fn extend(&mut self, other: Self) {
        self.certs.extend(other.certs);
    }
}

/// A CA that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The CA file cannot be read, is not PEM, holds no certificate, or
    /// holds an unusable one.
    #[error("CA file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// In-memory PEM or DER input holds no usable certificate.
    #[error("CA certificates: {reason}")]
    CaPem {
        /// What is wrong with them.
        reason: String,
    },
}

impl TlsConfigError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CaFile { .. } => "TLS_CA_FILE",
            Self::CaPem { .. } => "TLS_CA_INVALID",
        }
    }
}

/// True for a `wss://` URL (the scheme is case-insensitive).
pub(crate) fn is_wss(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss://"))
}

/// The rustls configuration for `wss://`: system roots plus `extra`.
pub(crate) fn client_config(extra: &RootCertificates) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!("loading system root certificates: {e}");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
    for cert in &extra.certs {
        roots.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_ca_input_is_refused_and_names_the_file() {
        let missing = RootCertificates::from_pem_file("/nonexistent/ca.pem").unwrap_err();
        assert_eq!(missing.code(), "TLS_CA_FILE");
        assert!(
            missing.to_string().contains("/nonexistent/ca.pem"),
            "{missing}"
        );
        assert_eq!(
            RootCertificates::from_pem(b"hello").unwrap_err(),
            TlsConfigError::CaPem {
                reason: "no CERTIFICATE block".into()
            }
        );
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            RootCertificates::from_pem(garbage).unwrap_err().code(),
            "TLS_CA_INVALID"
        );
        assert!(RootCertificates::from_der([vec![1, 2, 3]]).is_err());
    }

    #[test]
    fn wss_scheme() {
        assert!(is_wss("wss://h:1") && is_wss("WSS://h") && !is_wss("ws://h") && !is_wss("ws"));
    }
}
