//! The process-wide TLS crypto provider (ring, through pingora's rustls), for the server's
//! listener and every client alike (upstream, the bucket): installed once before any client is
//! built, so neither aws-lc nor OpenSSL is needed. (The listener's certificates are
//! `server::tls`.)

/// Install the process-wide rustls crypto provider; calling it again does nothing.
pub fn install_crypto_provider() {
    pingora::tls::install_default_crypto_provider();
}
