//! HTTPS: `[server] tls_cert` and `tls_key` (PEM files) served with rustls (ring), ALPN `h2`
//! and `http/1.1`. A renewed certificate (the files replaced, e.g. by certbot) is picked up
//! without a restart; a certificate that cannot be used stops the start with a clear message,
//! and a bad renewal keeps the one in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use sluice_plugin_api::live::Watched;
use sluice_plugin_api::watch::Reread;

/// The certificate in use, reloaded from its files.
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' bytes when last loaded, to skip reloads that change nothing.
    last: Mutex<Vec<u8>>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

fn read_both(cert: &Path, key: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    bytes.extend(std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?);
    Ok(bytes)
}

fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    crate::crypto::install_crypto_provider();
    let (certs, private) = pingora::tls::load_certs_and_key_files(
        &cert.display().to_string(),
        &key.display().to_string(),
    )
    .map_err(|e| format!("{} / {}: {e}", cert.display(), key.display()))?
    .ok_or_else(|| {
        format!(
            "{} has no PEM certificate or {} no PEM private key (PKCS#1, PKCS#8 or SEC1)",
            cert.display(),
            key.display()
        )
    })?;
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider is installed".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|e| format!("{}: the private key cannot be used: {e}", key.display()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(certified)
}

impl Certificate {
    /// Load the certificate chain in `cert` and its key in `key`.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        let certified = load(cert, key)?;
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Arc::new(certified)),
            last: Mutex::new(read_both(cert, key).unwrap_or_default()),
        })
    }

    /// Load the files again; a certificate that cannot be used keeps the one in use.
    pub fn reload(&self) -> Result<bool, String> {
        let bytes = read_both(&self.cert, &self.key)?;
        if *self.last.lock().unwrap_or_else(|p| p.into_inner()) == bytes {
            return Ok(false);
        }
        let certified = load(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
        tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
        Ok(true)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

impl Watched for Certificate {
    fn path(&self) -> &Path {
        &self.cert
    }

    fn reread(&self, _confirm_empty: bool) -> Reread {
        match self.reload() {
            Ok(_) => Reread::Done,
            Err(error) => Reread::Failed(format!(
                "the renewed certificate cannot be used, the one in use stays: {error}"
            )),
        }
    }
}
