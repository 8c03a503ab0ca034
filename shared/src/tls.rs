//! The TLS crypto provider. reqwest (under async-openai) is built without a bundled
//! provider so that only ring, which sqlx uses already, is compiled; it then needs the
//! process-wide default installed before the first HTTP client is built.

/// Installs ring as the process's rustls provider. Idempotent; call at start-up.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all we need.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
