//! The crypto provider: `aws-lc-rs` with that feature, else `ring` (the default feature).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::ProducesTickets;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("portcullis-mtls needs a crypto provider: enable the `ring` (default) or `aws-lc-rs` feature");

/// The crypto provider portcullis-mtls uses unless told otherwise: `aws-lc-rs` when that feature is on
/// (it offers the post-quantum X25519MLKEM768 key exchange), else `ring` (feature `ring`, default).
///
/// rustls 0.23.48 deprecates its `ring` provider because `ring` has no post-quantum algorithms. `ring`
/// stays the default so that existing builds keep their dependency tree (rustls 0.23 still ships it); a
/// deployment that wants post-quantum key exchange enables `aws-lc-rs`, which then wins even with `ring`
/// still on.
pub fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
    #[cfg(all(not(feature = "aws-lc-rs"), feature = "ring"))]
    {
        ring_provider()
    }
}

/// `ring`'s provider: deprecated by rustls for lacking post-quantum key exchange (see
/// [`default_provider`]); choosing it is this crate's documented default, with `aws-lc-rs` as the way out.
#[cfg(all(not(feature = "aws-lc-rs"), feature = "ring"))]
#[expect(
    deprecated,
    reason = "rustls deprecates ring's provider for lacking post-quantum algorithms; the `aws-lc-rs` feature \
              is the documented alternative and takes precedence when enabled"
)]
fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A session ticketer with fresh keys, from the same provider family.
pub(crate) fn ticketer() -> Result<Arc<dyn ProducesTickets>, rustls::Error> {
    #[cfg(feature = "aws-lc-rs")]
    {
        rustls::crypto::aws_lc_rs::Ticketer::new()
    }
    #[cfg(all(not(feature = "aws-lc-rs"), feature = "ring"))]
    {
        rustls::crypto::ring::Ticketer::new()
    }
}
