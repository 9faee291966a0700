//! The TLS crypto provider (ring, through pingora's rustls): installed once before any client
//! is built, so neither aws-lc nor OpenSSL is needed.

/// Install the process-wide rustls crypto provider; calling it again does nothing.
pub fn install_crypto_provider() {
    pingora::tls::install_default_crypto_provider();
}
