//! TLS, when `--server` is `https://…`: to the HTTP API and to the relay alike (the server has
//! one certificate for all of its listeners), trusting `--tls-ca` or else the system's roots.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use improto::TlsTarget;
use improto::rustls::{self, RootCertStore};

/// The roots a server's certificate must chain to: those in `ca` (PEM), or the system's.
pub fn roots(ca: Option<&Path>) -> anyhow::Result<RootCertStore> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("cannot read certificates from {}", path.display()))?;
            if certs.is_empty() {
                bail!("{} holds no certificate", path.display());
            }
            for cert in certs {
                roots.add(cert).with_context(|| {
                    format!("a certificate in {} is not usable", path.display())
                })?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // One unusable system certificate does not make the others unusable.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                bail!("no system root certificates found: name the server's CA with --tls-ca");
            }
        }
    }
    Ok(roots)
}

/// The client side of TLS for the HTTP API (reqwest), with `roots`.
pub fn http_config(roots: RootCertStore) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The relay's TLS target: the host part of `relay` (`host:port`) is the name the
/// certificate must carry.
pub fn relay_target(relay: &str, roots: RootCertStore) -> anyhow::Result<TlsTarget> {
    let Some((host, _port)) = relay.rsplit_once(':') else {
        bail!("--relay {relay}: expected host:port");
    };
    let server_name = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(TlsTarget { server_name, roots })
}
