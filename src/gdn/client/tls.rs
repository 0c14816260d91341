//! The rustls configuration shared by the REST client and the client's sockets.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use super::error::RestError;

/// An extra root certificate to trust, as given to the builder.
#[derive(Debug, Clone)]
pub(super) enum ExtraRoot {
    /// PEM text, one or more certificates.
    Pem(Vec<u8>),
    /// A PEM file, read when the client is built.
    File(PathBuf),
}

/// The TLS setup a client is built with.
pub(super) struct Tls {
    /// What the REST client uses.
    pub(super) config: Arc<ClientConfig>,
    /// True if the sockets must use it too (a configuration of the caller's, or extra roots);
    /// otherwise they keep their own default, which trusts the same webpki roots.
    pub(super) for_sockets: bool,
}

/// The caller's configuration, or one on the ring provider trusting the webpki roots plus
/// `extra`.
pub(super) fn configure(
    custom: Option<Arc<ClientConfig>>,
    extra: &[ExtraRoot],
) -> Result<Tls, RestError> {
    if let Some(config) = custom {
        if !extra.is_empty() {
            return Err(RestError::Config(
                "extra root certificates cannot be added to a rustls configuration of your own; \
                 put them in its root store"
                    .into(),
            ));
        }
        return Ok(Tls {
            config,
            for_sockets: true,
        });
    }
    let mut roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for root in extra {
        let (pem, source) = match root {
            ExtraRoot::Pem(pem) => (pem.clone(), "the PEM data".to_string()),
            ExtraRoot::File(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    RestError::Config(format!("cannot read {}: {e}", path.display()))
                })?;
                (pem, path.display().to_string())
            }
        };
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| RestError::Config(format!("invalid PEM in {source}: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| RestError::Config(format!("invalid certificate in {source}: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(RestError::Config(format!("no certificate in {source}")));
        }
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| RestError::Config(format!("TLS setup failed: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Tls {
        config: Arc::new(config),
        for_sockets: !extra.is_empty(),
    })
}
