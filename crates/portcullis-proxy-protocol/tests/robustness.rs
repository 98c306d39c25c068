//! The parser on arbitrary and mutated input: never a panic, never a read past the buffer, and a complete
//! header never claims more bytes than it was given.

use portcullis_proxy_protocol::{Parsed, parse};
use proptest::prelude::*;

const V2_SIGNATURE: [u8; 12] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A];

fn check(buf: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(Parsed::Complete { consumed, .. }) = parse(buf) {
        prop_assert!(consumed <= buf.len() && consumed > 0);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
        check(&buf)?;
    }

    /// A valid v2 signature followed by arbitrary version, command, family, length and TLV bytes.
    #[test]
    fn v2_signature_then_arbitrary(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&tail);
        check(&buf)?;
    }

    /// A v2 TCP4 header with a random TLV area of the declared length.
    #[test]
    fn v2_tcp4_random_tlvs(tlvs in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x21, 0x11]);
        buf.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
        buf.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2, 0x9c, 0x40, 0x01, 0xbb]);
        buf.extend_from_slice(&tlvs);
        check(&buf)?;
    }

    /// v1 lines made of plausible tokens.
    #[test]
    fn v1_token_soup(parts in proptest::collection::vec(
        prop_oneof![Just("PROXY"), Just("TCP4"), Just("TCP6"), Just("UNKNOWN"), Just(" "), Just("1.2.3.4"),
            Just("::1"), Just("65535"), Just("65536"), Just("0"), Just("\r\n"), Just("\r"), Just("\n"), Just("x")],
        0..14,
    )) {
        check(parts.concat().as_bytes())?;
    }
}
