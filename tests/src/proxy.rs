//! Handcrafted PROXY protocol headers, as a cloud load balancer sends them.
//!
//! Layout (haproxy's PROXY protocol specification, section 2.2): the 12-byte signature, version/command
//! `0x21` (v2, PROXY), family/protocol `0x11` (TCP over IPv4), the big-endian length of what follows, the
//! source and destination addresses and ports, then type-length-value records.

use std::net::SocketAddrV4;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Azure Private Link: type 0xEE, subtype 0x01, the LinkID as a little-endian u32.
pub fn azure_tlv(link_id: u32) -> (u8, Vec<u8>) {
    let mut v = vec![0x01];
    v.extend_from_slice(&link_id.to_le_bytes());
    (0xEE, v)
}

/// AWS PrivateLink: type 0xEA, subtype 0x01, the VPC endpoint id in ASCII.
pub fn aws_tlv(vpce: &str) -> (u8, Vec<u8>) {
    let mut v = vec![0x01];
    v.extend_from_slice(vpce.as_bytes());
    (0xEA, v)
}

/// GCP Private Service Connect: type 0xE0, the connection id as a big-endian u64 (no subtype).
pub fn gcp_tlv(psc_id: u64) -> (u8, Vec<u8>) {
    (0xE0, psc_id.to_be_bytes().to_vec())
}

/// A v2 PROXY header for a TCP/IPv4 connection from `src` to `dst` with `tlvs`.
pub fn v2(src: SocketAddrV4, dst: SocketAddrV4, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&src.ip().octets());
    body.extend_from_slice(&dst.ip().octets());
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        body.extend_from_slice(&u16::try_from(value.len()).expect("short TLV").to_be_bytes());
        body.extend_from_slice(value);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.push(0x21);
    out.push(0x11);
    out.extend_from_slice(&u16::try_from(body.len()).expect("short header").to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A v1 PROXY header (`PROXY TCP4 <src> <dst> <sport> <dport>\r\n`).
pub fn v1(src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    format!("PROXY TCP4 {} {} {} {}\r\n", src.ip(), dst.ip(), src.port(), dst.port()).into_bytes()
}
