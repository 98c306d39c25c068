//! The crypto provider: `ring` by default, `aws-lc-rs` with that feature (and `ring` off).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("portcullis-mtls needs a crypto provider: enable the `ring` (default) or `aws-lc-rs` feature");

/// The crypto provider portcullis-mtls uses unless told otherwise: `ring` (feature `ring`, default), else
/// `aws-lc-rs` (feature `aws-lc-rs`).
pub fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    {
        Arc::new(rustls::crypto::ring::default_provider())
    }
    #[cfg(all(not(feature = "ring"), feature = "aws-lc-rs"))]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
}

/// A session ticketer with fresh keys, from the same provider family.
pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    #[cfg(feature = "ring")]
    {
        rustls::crypto::ring::Ticketer::new()
    }
    #[cfg(all(not(feature = "ring"), feature = "aws-lc-rs"))]
    {
        rustls::crypto::aws_lc_rs::Ticketer::new()
    }
}
