//! HTTPS, when the service terminates TLS itself: bearer tokens and session
//! cookies must not cross a network in clear. The certificate and key are
//! PEM files, read at start and again whenever either file changes (a
//! renewed certificate needs no restart); a file that does not load keeps
//! the one being served, and says why.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The certificate chain and private key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The rustls provider every TLS connection of the process uses (ring:
/// builds with no C toolchain beyond cc). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsFiles {
    /// The files as a server configuration (HTTP/1.1 and HTTP/2 by ALPN).
    pub async fn load(&self) -> anyhow::Result<RustlsConfig> {
        install_crypto_provider();
        RustlsConfig::from_pem_file(&self.cert, &self.key)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot load the TLS certificate {} and key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                )
            })
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }

    /// Reloads `config` whenever either file changes, until `shutdown`.
    pub async fn watch(self, config: RustlsConfig, shutdown: CancellationToken) {
        let mut seen = self.modified();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = self.modified();
            if now.is_none() || now == seen {
                continue;
            }
            match config.reload_from_pem_file(&self.cert, &self.key).await {
                Ok(()) => {
                    seen = now;
                    tracing::info!(cert = %self.cert.display(), "reloaded the TLS certificate");
                }
                // Half-written files (the new certificate before its key)
                // load at the next look.
                Err(e) => tracing::warn!(cert = %self.cert.display(), error = %e,
                    "cannot reload the TLS certificate; still serving the previous one"),
            }
        }
    }
}
