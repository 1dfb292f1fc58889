//! TLS for every listener (`--tls-cert`, `--tls-key`), through rustls: TLS 1.2 and 1.3 with
//! rustls's default cipher suites, and no legacy ones.
//!
//! The certificate and key sit behind a resolver that every handshake asks, so a reload
//! (`SIGHUP`, see [`Tls::reload`]) swaps them for the handshakes that follow while the
//! connections already open keep theirs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, aws_lc_rs};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read the TLS key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("the TLS key {key} does not go with the certificate {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The server's TLS: the acceptors of both listeners and the certificate they share.
#[derive(Clone)]
pub struct Tls {
    current: Arc<Current>,
    /// HTTP and `wss://`: offers `http/1.1` by ALPN.
    http: TlsAcceptor,
    /// The TCP relay.
    relay: TlsAcceptor,
}

/// The certificate and key in use, and the files they came from.
struct Current {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    key: RwLock<Arc<CertifiedKey>>,
}

impl Tls {
    /// Reads the certificate chain and key (PEM), and checks that they go together.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Tls, TlsError> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let key = read(cert_path, key_path, &provider)?;
        let current = Arc::new(Current {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider: provider.clone(),
            key: RwLock::new(Arc::new(key)),
        });
        let config = |alpn: &[&[u8]]| {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the default provider supports the default versions")
                .with_no_client_auth()
                .with_cert_resolver(current.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        Ok(Tls {
            http: config(&[b"http/1.1"]),
            relay: config(&[]),
            current,
        })
    }

    /// Reads the files again. On success, new handshakes use what was read; on failure
    /// (say, a key that does not go with the certificate) nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        let c = &self.current;
        let key = read(&c.cert_path, &c.key_path, &c.provider)?;
        *c.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
        Ok(())
    }

    pub fn http(&self) -> &TlsAcceptor {
        &self.http
    }

    pub fn relay(&self) -> &TlsAcceptor {
        &self.relay
    }
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.current.cert_path)
            .field("key", &self.current.key_path)
            .finish()
    }
}

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Current")
            .field("cert", &self.cert_path)
            .finish()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

fn read(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert_path.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_error(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(pem_reason(e)))?;
    if chain.is_empty() {
        return Err(cert_error("no CERTIFICATE in it".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsError::Key {
        path: key_path.to_owned(),
        reason: pem_reason(e),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        reason: match e {
            rustls::Error::InconsistentKeys(_) => "the key is not the certificate's".into(),
            other => other.to_string(),
        },
    })
}

fn pem_reason(e: rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match e {
        Error::Io(e) => e.to_string(),
        Error::NoItemsFound => "no PEM item of the right kind in it".into(),
        other => format!("not valid PEM: {other}"),
    }
}
