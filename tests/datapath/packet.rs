//! Building Ethernet/IPv4 and Ethernet/IPv6 frames (IPv6 extension headers
//! included) with TCP/UDP/ICMP, reading their fields, and checksums computed
//! from scratch (never with the code under test). Every builder and reader
//! takes the family from the addresses or the frame's ethertype, so that a
//! test body is written once for both.
use std::net::{IpAddr, SocketAddr};

use portfwd_common::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Packet building.
// ---------------------------------------------------------------------------

/// IPv6 extension header types.
pub const EXT_HOP_BY_HOP: u8 = 0;
pub const EXT_ROUTING: u8 = 43;
pub const EXT_FRAGMENT: u8 = 44;
pub const EXT_DEST_OPTS: u8 = 60;
pub const IP6_HLEN: usize = 40;
/// The fragment header's M flag (in its offset word).
pub const IP6_MF: u16 = 0x0001;

/// The L3 header of a packet to build: IPv4 or IPv6 as its addresses are.
#[derive(Clone)]
pub struct Ip {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// IPv4 options, a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
    /// IPv4 flags and fragment offset (8-byte units).
    pub frag: u16,
    /// The identification field (IPv4: its low 16 bits; IPv6: the
    /// fragment header's, when `fragments` adds one).
    pub id: u32,
    /// IPv6 extension headers, in order: (type, the whole header; its
    /// first byte, the next header, is filled in by the builder).
    pub ext: Vec<(u8, Vec<u8>)>,
}

impl Ip {
    pub fn new(src: impl Into<IpAddr>, dst: impl Into<IpAddr>, proto: u8) -> Self {
        let (src, dst) = (src.into(), dst.into());
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "test bug: mixed families");
        Self {
            src,
            dst,
            proto,
            options: Vec::new(),
            frag: 0,
            id: 0x1234,
            ext: Vec::new(),
        }
    }

    pub fn id(mut self, id: u32) -> Self {
        self.id = id;
        self
    }

    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }

    pub fn frag(mut self, frag: u16) -> Self {
        self.frag = frag;
        self
    }

    /// Appends an IPv6 extension header.
    pub fn ext(mut self, ty: u8, header: Vec<u8>) -> Self {
        assert!(
            header.len() >= 8 && header.len().is_multiple_of(8),
            "test bug: extension headers are multiples of 8 bytes"
        );
        self.ext.push((ty, header));
        self
    }
}

/// An options extension header (hop-by-hop or destination options) of
/// `units` 8-byte units, filled with padding options (PadN, a last Pad1).
pub fn ext_options(units: usize) -> Vec<u8> {
    assert!((1..=256).contains(&units), "test bug: options length");
    let mut h = vec![0, (units - 1) as u8];
    while h.len() < units * 8 {
        let left = units * 8 - h.len();
        if left == 1 {
            h.push(0);
        } else {
            let n = (left - 2).min(255);
            h.extend_from_slice(&[1, n as u8]);
            h.resize(h.len() + n, 0);
        }
    }
    h
}

/// A routing header (type 253, experimental) with no segments left: the
/// receiver goes on to the next header.
pub fn ext_routing() -> Vec<u8> {
    vec![0, 0, 253, 0, 0, 0, 0, 0]
}

/// A fragment header: offset in 8-byte units, M, identification.
pub fn ext_fragment(offset: usize, more: bool, id: u32) -> Vec<u8> {
    let word = (offset as u16) << 3 | if more { IP6_MF } else { 0 };
    let mut h = vec![0, 0];
    h.extend_from_slice(&word.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

pub fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

/// Ethernet + the L3 header(s) of `ip` (the IPv4 header checksum filled
/// in) + `l4` as given.
pub fn ip_frame(ip: &Ip, l4: &[u8]) -> Vec<u8> {
    match (ip.src, ip.dst) {
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut ext = Vec::new();
            let mut next = ip.proto;
            for (ty, h) in ip.ext.iter().rev() {
                let mut h = h.clone();
                h[0] = next;
                next = *ty;
                ext.splice(0..0, h);
            }
            let payload = u16::try_from(ext.len() + l4.len()).expect("packet too long");
            let mut p = eth_header(ETH_P_IPV6);
            p.extend_from_slice(&[0x60, 0, 0, 0]);
            p.extend_from_slice(&payload.to_be_bytes());
            p.push(next);
            p.push(64); // hop limit
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&dst.octets());
            p.extend_from_slice(&ext);
            p.extend_from_slice(l4);
            p
        }
        _ => ipv4_frame(ip, l4),
    }
}

/// Ethernet + IPv4 (header checksum filled in) + `l4` as given.
pub fn ipv4_frame(ip: &Ip, l4: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (ip.src, ip.dst) else {
        panic!("test bug: an IPv4 frame of IPv6 addresses");
    };
    assert!(ip.ext.is_empty(), "test bug: extension headers in IPv4");
    assert!(
        ip.options.len().is_multiple_of(4) && ip.options.len() <= 40,
        "bad IP options length"
    );
    let ihl = 20 + ip.options.len();
    let total = u16::try_from(ihl + l4.len()).expect("packet too long");
    let mut p = eth_header(ETH_P_IP);
    p.push(0x40 | (ihl / 4) as u8);
    p.push(0); // TOS
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&(ip.id as u16).to_be_bytes());
    p.extend_from_slice(&ip.frag.to_be_bytes());
    p.push(64); // TTL
    p.push(ip.proto);
    p.extend_from_slice(&[0, 0]); // checksum, below
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&ip.options);
    fix_ip_csum(&mut p);
    p.extend_from_slice(l4);
    p
}

/// A 20-byte TCP header and payload, checksum zero.
pub fn tcp_segment(
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = Vec::with_capacity(20 + payload.len());
    s.extend_from_slice(&sport.to_be_bytes());
    s.extend_from_slice(&dport.to_be_bytes());
    s.extend_from_slice(&seq.to_be_bytes());
    s.extend_from_slice(&ack.to_be_bytes());
    s.push(5 << 4); // data offset
    s.push(flags);
    s.extend_from_slice(&64240u16.to_be_bytes()); // window
    s.extend_from_slice(&[0, 0]); // checksum
    s.extend_from_slice(&[0, 0]); // urgent pointer
    s.extend_from_slice(payload);
    s
}

/// A UDP header and payload, checksum zero.
pub fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("datagram too long");
    let mut d = Vec::with_capacity(8 + payload.len());
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// A TCP packet with the L3 header `ip`, every checksum right.
pub fn tcp_with(ip: &Ip, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = ip_frame(
        ip,
        &tcp_segment(
            sport,
            dport,
            flags,
            1000,
            if flags & TCP_ACK != 0 { 5000 } else { 0 },
            payload,
        ),
    );
    fix_l4_csum(&mut p);
    p
}

pub fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Vec<u8> {
    tcp_with(
        &Ip::new(src.ip(), dst.ip(), PROTO_TCP),
        src.port(),
        dst.port(),
        flags,
        &[],
    )
}

/// A UDP packet with the L3 header `ip`, every checksum right (a computed
/// zero sent as 0xffff).
pub fn udp_with(ip: &Ip, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = ip_frame(ip, &udp_datagram(sport, dport, payload));
    fix_l4_csum(&mut p);
    p
}

pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    udp_with(
        &Ip::new(src.ip(), dst.ip(), PROTO_UDP),
        src.port(),
        dst.port(),
        payload,
    )
}

// ---------------------------------------------------------------------------
// Field readers.
// ---------------------------------------------------------------------------

pub fn is_v6(p: &[u8]) -> bool {
    u16::from_be_bytes([p[12], p[13]]) == ETH_P_IPV6
}

pub fn ihl(p: &[u8]) -> usize {
    ((p[ETH_HLEN] & 0x0f) as usize) * 4
}

/// IPv6: the upper-layer protocol and its offset in the frame, after every
/// extension header (walked here without a bound).
fn v6_upper(p: &[u8]) -> (u8, usize) {
    let mut next = p[ETH_HLEN + 6];
    let mut off = ETH_HLEN + IP6_HLEN;
    loop {
        match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS => {
                next = p[off];
                off += (p[off + 1] as usize + 1) * 8;
            }
            EXT_FRAGMENT => {
                next = p[off];
                off += 8;
            }
            _ => return (next, off),
        }
    }
}

/// Offset of the L4 (or ICMP) header in the frame.
pub fn l4_off(p: &[u8]) -> usize {
    if is_v6(p) {
        v6_upper(p).1
    } else {
        ETH_HLEN + ihl(p)
    }
}

/// The L3 packet's length, as its header says.
pub fn ip_total_len(p: &[u8]) -> usize {
    if is_v6(p) {
        IP6_HLEN + u16::from_be_bytes([p[ETH_HLEN + 4], p[ETH_HLEN + 5]]) as usize
    } else {
        u16::from_be_bytes([p[ETH_HLEN + 2], p[ETH_HLEN + 3]]) as usize
    }
}

/// The upper-layer protocol (IPv6: after the extension headers).
pub fn ip_proto(p: &[u8]) -> u8 {
    if is_v6(p) {
        v6_upper(p).0
    } else {
        p[ETH_HLEN + 9]
    }
}

/// The offsets of the source and destination address in the L3 header.
fn addr_offs(p: &[u8]) -> (usize, usize, usize) {
    if is_v6(p) {
        (8, 24, 16)
    } else {
        (12, 16, 4)
    }
}

pub fn src_ip(p: &[u8]) -> IpAddr {
    ip_at(p, addr_offs(p).0)
}

pub fn dst_ip(p: &[u8]) -> IpAddr {
    ip_at(p, addr_offs(p).1)
}

fn ip_at(p: &[u8], off: usize) -> IpAddr {
    let o = ETH_HLEN + off;
    if is_v6(p) {
        IpAddr::from(<[u8; 16]>::try_from(&p[o..o + 16]).unwrap())
    } else {
        IpAddr::from(<[u8; 4]>::try_from(&p[o..o + 4]).unwrap())
    }
}

/// Writes `ip` as the source or destination address of `p` (checksums
/// untouched).
pub fn set_ip(p: &mut [u8], dst: bool, ip: IpAddr) {
    let (s, d, _) = addr_offs(p);
    let o = ETH_HLEN + if dst { d } else { s };
    match ip {
        IpAddr::V4(a) => p[o..o + 4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => p[o..o + 16].copy_from_slice(&a.octets()),
    }
}

pub fn port(p: &[u8], off: usize) -> u16 {
    let o = l4_off(p) + off;
    u16::from_be_bytes([p[o], p[o + 1]])
}

pub fn set_port(p: &mut [u8], off: usize, port: u16) {
    let o = l4_off(p) + off;
    p[o..o + 2].copy_from_slice(&port.to_be_bytes());
}

pub fn src_of(p: &[u8]) -> SocketAddr {
    SocketAddr::new(src_ip(p), port(p, 0))
}

pub fn dst_of(p: &[u8]) -> SocketAddr {
    SocketAddr::new(dst_ip(p), port(p, 2))
}

/// Offset of the L4 checksum in the frame.
pub fn l4_csum_off(p: &[u8]) -> usize {
    l4_off(p) + if ip_proto(p) == PROTO_TCP { 16 } else { 6 }
}

pub fn l4_csum(p: &[u8]) -> u16 {
    let o = l4_csum_off(p);
    u16::from_be_bytes([p[o], p[o + 1]])
}

pub fn set_l4_csum(p: &mut [u8], csum: u16) {
    let o = l4_csum_off(p);
    p[o..o + 2].copy_from_slice(&csum.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Checksums, computed from scratch.
// ---------------------------------------------------------------------------

/// One's-complement sum of `data` as 16-bit big-endian words (an odd last
/// byte padded with zero), added to `acc`, folded to 16 bits.
pub fn ones_sum(data: &[u8], acc: u64) -> u16 {
    let mut s = acc;
    for w in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

pub fn ip_header(p: &[u8]) -> &[u8] {
    &p[ETH_HLEN..ETH_HLEN + ihl(p)]
}

/// The L4 (or ICMP) bytes the L3 header accounts for.
pub fn l4_bytes(p: &[u8]) -> &[u8] {
    &p[l4_off(p)..ETH_HLEN + ip_total_len(p)]
}

/// The pseudo-header's contribution to the L4 (or ICMPv6) checksum: for
/// IPv4 both addresses, a zero byte, the protocol and the 16-bit L4 length
/// (RFC 793); for IPv6 both 128-bit addresses, the 32-bit upper-layer
/// length and three zero bytes before the next header (RFC 8200, 8.1).
pub fn pseudo_sum(p: &[u8]) -> u64 {
    let len = l4_bytes(p).len();
    let mut ph = Vec::with_capacity(40);
    if is_v6(p) {
        ph.extend_from_slice(&p[ETH_HLEN + 8..ETH_HLEN + 40]);
        ph.extend_from_slice(&(len as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, ip_proto(p)]);
    } else {
        ph.extend_from_slice(&p[ETH_HLEN + 12..ETH_HLEN + 20]);
        ph.extend_from_slice(&[0, ip_proto(p)]);
        ph.extend_from_slice(&(len as u16).to_be_bytes());
    }
    u64::from(ones_sum(&ph, 0))
}

/// True if the IPv4 header checksum verifies; IPv6 has none (true).
pub fn ip_csum_ok(p: &[u8]) -> bool {
    is_v6(p) || ones_sum(ip_header(p), 0) == 0xffff
}

/// True if the TCP/UDP checksum verifies, pseudo-header included. A UDP
/// checksum of zero ("none") does not count as verifying.
pub fn l4_csum_ok(p: &[u8]) -> bool {
    if ip_proto(p) == PROTO_UDP && l4_csum(p) == 0 {
        return false;
    }
    ones_sum(l4_bytes(p), pseudo_sum(p)) == 0xffff
}

/// Sets the IPv4 header checksum; nothing for IPv6.
pub fn fix_ip_csum(p: &mut [u8]) {
    if !is_v6(p) {
        let len = ihl(p);
        fix_ip_csum_over(p, len);
    }
}

/// Sets the IPv4 header checksum computed over the first `len` bytes of the
/// header (for headers whose IHL is deliberately wrong).
pub fn fix_ip_csum_over(p: &mut [u8], len: usize) {
    p[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    let c = !ones_sum(&p[ETH_HLEN..ETH_HLEN + len], 0);
    p[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
}

pub fn fix_l4_csum(p: &mut [u8]) {
    set_l4_csum(p, 0);
    let mut c = !ones_sum(l4_bytes(p), pseudo_sum(p));
    if c == 0 && ip_proto(p) == PROTO_UDP {
        // RFC 768: a computed zero is sent as all ones.
        c = 0xffff;
    }
    set_l4_csum(p, c);
}

/// Zeroes the IPv4 header checksum (IPv6: nothing to zero).
fn clear_ip_csum(p: &mut [u8], l3_off: usize) {
    if !is_v6(p) {
        p[l3_off + 10..l3_off + 12].copy_from_slice(&[0, 0]);
    }
}

/// `p` with both checksum fields zeroed, to compare the rest of two packets.
pub fn without_csums(p: &[u8]) -> Vec<u8> {
    let mut c = p.to_vec();
    clear_ip_csum(&mut c, ETH_HLEN);
    set_l4_csum(&mut c, 0);
    c
}

/// `out` is `expected` (the rewritten packet built from scratch) with both
/// checksums right: every other byte as expected, checksums verified from
/// scratch.
pub fn assert_translated(what: &str, out: &[u8], expected: &[u8]) {
    assert_eq!(
        out.len(),
        expected.len(),
        "{what}: the packet's length changed"
    );
    assert_eq!(
        without_csums(out),
        without_csums(expected),
        "{what}: bytes other than the checksums differ from the expected rewrite\n got: {out:02x?}\nwant: {expected:02x?}"
    );
    assert!(
        ip_csum_ok(out),
        "{what}: the IPv4 header checksum does not verify after the rewrite (got {:#06x}, want {:#06x})",
        u16::from_be_bytes([out[ETH_HLEN + 10], out[ETH_HLEN + 11]]),
        u16::from_be_bytes([expected[ETH_HLEN + 10], expected[ETH_HLEN + 11]]),
    );
    assert!(
        l4_csum_ok(out),
        "{what}: the L4 checksum does not verify after the rewrite (got {:#06x}, want {:#06x})",
        l4_csum(out),
        l4_csum(expected),
    );
}

pub fn assert_untouched(what: &str, run: &Run, pkt: &[u8]) {
    assert_eq!(
        run.verdict, TC_ACT_OK,
        "{what}: verdict {} instead of TC_ACT_OK",
        run.verdict
    );
    assert_eq!(run.out, pkt, "{what}: the packet was modified");
}

// ---------------------------------------------------------------------------
// Fragments and ICMP errors.
// ---------------------------------------------------------------------------

/// The fragments of the datagram `whole` (a frame with every checksum
/// right), its fragmentable part cut after each of `cuts` bytes (multiples
/// of 8), identified by `id`. IPv4: each with its own header (id, offset,
/// MF, checksum). IPv6: each with the IPv6 header and a fragment header
/// after it; `whole` has no extension headers.
pub fn fragments(whole: &[u8], cuts: &[usize], id: u32) -> Vec<Vec<u8>> {
    let v6 = is_v6(whole);
    let hl = if v6 { IP6_HLEN } else { ihl(whole) };
    assert!(
        !v6 || l4_off(whole) == ETH_HLEN + IP6_HLEN,
        "test bug: fragments of a datagram with extension headers"
    );
    let header = &whole[..ETH_HLEN + hl];
    let payload = &whole[ETH_HLEN + hl..ETH_HLEN + ip_total_len(whole)];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(payload.len());
    bounds
        .windows(2)
        .map(|w| {
            assert!(w[0] % 8 == 0, "fragment offsets are multiples of 8");
            let last = w[1] == payload.len();
            let mut f = header.to_vec();
            if v6 {
                let mut fh = ext_fragment(w[0] / 8, !last, id);
                fh[0] = f[ETH_HLEN + 6];
                f[ETH_HLEN + 6] = EXT_FRAGMENT;
                f.extend_from_slice(&fh);
                f.extend_from_slice(&payload[w[0]..w[1]]);
                let len = (8 + w[1] - w[0]) as u16;
                f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&len.to_be_bytes());
            } else {
                f.extend_from_slice(&payload[w[0]..w[1]]);
                let total = (hl + w[1] - w[0]) as u16;
                f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
                f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&(id as u16).to_be_bytes());
                let word = (w[0] / 8) as u16 | if last { 0 } else { IP_MF };
                f[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&word.to_be_bytes());
                fix_ip_csum(&mut f);
            }
            f
        })
        .collect()
}

/// An ICMP (ICMPv6 for IPv6 addresses) message from `src` to `dst`: type,
/// code, the 4 bytes after the checksum, and `body` (for an error, the
/// start of the packet it is about, from its L3 header on); every checksum
/// right (ICMPv6's over its pseudo-header).
pub fn icmp_error(
    src: impl Into<IpAddr>,
    dst: impl Into<IpAddr>,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let (src, dst) = (src.into(), dst.into());
    let proto = if src.is_ipv6() {
        PROTO_ICMPV6
    } else {
        PROTO_ICMP
    };
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(body);
    let mut p = ip_frame(&Ip::new(src, dst, proto), &icmp);
    fix_icmp_csum(&mut p);
    p
}

/// Sets the ICMP (ICMPv6) checksum of an ICMP frame.
pub fn fix_icmp_csum(p: &mut [u8]) {
    let o = l4_off(p);
    p[o + 2..o + 4].copy_from_slice(&[0, 0]);
    let c = !ones_sum(icmp_message(p), icmp_pseudo(p));
    p[o + 2..o + 4].copy_from_slice(&c.to_be_bytes());
}

/// ICMPv6's pseudo-header sum; ICMP (IPv4) has none.
fn icmp_pseudo(p: &[u8]) -> u64 {
    if is_v6(p) {
        pseudo_sum(p)
    } else {
        0
    }
}

/// The L3 bytes of a frame (what an ICMP error quotes).
pub fn l3(p: &[u8]) -> &[u8] {
    &p[ETH_HLEN..ETH_HLEN + ip_total_len(p)]
}

/// The ICMP message of a frame.
pub fn icmp_message(p: &[u8]) -> &[u8] {
    &p[l4_off(p)..ETH_HLEN + ip_total_len(p)]
}

pub fn icmp_csum_ok(p: &[u8]) -> bool {
    ones_sum(icmp_message(p), icmp_pseudo(p)) == 0xffff
}

/// The quoted packet of an ICMP error frame, as a frame of its own (with a
/// copy of the outer Ethernet header), so the field readers apply.
pub fn quote_of(p: &[u8]) -> Vec<u8> {
    let mut q = p[..ETH_HLEN].to_vec();
    q.extend_from_slice(&icmp_message(p)[8..]);
    q
}

/// `out` is the ICMP error `expected` (built from scratch) up to its
/// checksums (outer IPv4, ICMP, quoted IPv4, quoted L4), each verified from
/// scratch here; `quoted_l4_whole` says the quote holds the whole L4 segment,
/// so that its checksum can be verified too (else it is compared as is).
pub fn assert_icmp_translated(what: &str, out: &[u8], expected: &[u8], quoted_l4_whole: bool) {
    assert_eq!(
        out.len(),
        expected.len(),
        "{what}: the packet's length changed"
    );
    let mut a = out.to_vec();
    let mut b = expected.to_vec();
    for p in [&mut a, &mut b] {
        clear_ip_csum(p, ETH_HLEN);
        let icmp = l4_off(p);
        p[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
        let inner = icmp + 8;
        clear_ip_csum(p, inner);
        if quoted_l4_whole {
            let q = quote_of(p);
            let off = l4_csum_off(&q) - ETH_HLEN + inner;
            p[off..off + 2].copy_from_slice(&[0, 0]);
        }
    }
    assert_eq!(
        a, b,
        "{what}: bytes other than the checksums differ from the expected translation\n got: {out:02x?}\nwant: {expected:02x?}"
    );
    assert!(
        ip_csum_ok(out),
        "{what}: the outer IPv4 checksum does not verify"
    );
    assert!(
        icmp_csum_ok(out),
        "{what}: the ICMP checksum does not verify"
    );
    let q = quote_of(out);
    assert!(
        ip_csum_ok(&q),
        "{what}: the quoted IPv4 checksum does not verify"
    );
    if quoted_l4_whole {
        let udp_none = ip_proto(&q) == PROTO_UDP && l4_csum(&q) == 0;
        assert!(
            udp_none || l4_csum_ok(&q),
            "{what}: the quoted L4 checksum does not verify"
        );
    }
}

// ---------------------------------------------------------------------------
// Deterministic pseudorandom bytes (splitmix64).
// ---------------------------------------------------------------------------

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The helpers every other test relies on: a known IPv4 header, a known
/// IPv6 UDP checksum, and checksums that verify until any covered byte
/// changes. Needs no BPF.
#[test]
fn checksum_helpers_are_right() {
    let mut p = eth_header(ETH_P_IP);
    p.extend_from_slice(&[
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ]);
    fix_ip_csum(&mut p);
    assert_eq!(
        &p[ETH_HLEN + 10..ETH_HLEN + 12],
        &[0xb8, 0x61],
        "IPv4 header checksum of the reference header"
    );
    assert!(ip_csum_ok(&p), "the reference header must verify");

    // UDP [2001:db8::1]:1234 -> [2001:db8::2]:53 "hello": 0x5b86, worked
    // out apart from this code over the RFC 8200 pseudo-header. Extension
    // headers are not in it, and the next header in it is UDP's, not the
    // first extension header's.
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::2".parse().unwrap();
    let plain = udp_with(&Ip::new(a, b, PROTO_UDP), 1234, 53, b"hello");
    assert_eq!(l4_csum(&plain), 0x5b86, "the reference IPv6 UDP checksum");
    let with_ext = udp_with(
        &Ip::new(a, b, PROTO_UDP)
            .ext(EXT_HOP_BY_HOP, ext_options(1))
            .ext(EXT_ROUTING, ext_routing())
            .ext(EXT_DEST_OPTS, ext_options(2)),
        1234,
        53,
        b"hello",
    );
    assert_eq!(
        l4_off(&with_ext),
        ETH_HLEN + IP6_HLEN + 32,
        "the L4 offset after 32 bytes of extension headers"
    );
    assert_eq!(
        (with_ext[ETH_HLEN + 6], ip_proto(&with_ext)),
        (EXT_HOP_BY_HOP, PROTO_UDP),
        "the chain starts with hop-by-hop and leads to UDP"
    );
    assert_eq!(
        l4_csum(&with_ext),
        0x5b86,
        "extension headers do not change the UDP checksum"
    );

    let v4_opts = Ip::new(CLIENT, HOST, PROTO_TCP).options(&[1, 1, 1, 0]);
    let v6_ext = Ip::new(V6::CLIENT, V6::HOST, PROTO_TCP).ext(EXT_DEST_OPTS, ext_options(1));
    for pkt in [
        tcp_with(&v4_opts, 40_000, 8080, TCP_SYN | TCP_ACK, b"odd"),
        udp(ep(CLIENT, 50_000), ep(HOST, 5353), b"an odd-length payload"),
        tcp_with(&v6_ext, 40_000, 8080, TCP_SYN | TCP_ACK, b"odd"),
        udp(ep(V6::CLIENT, 50_000), ep(V6::HOST, 5353), b"odd"),
    ] {
        assert!(
            ip_csum_ok(&pkt) && l4_csum_ok(&pkt),
            "a freshly built packet must verify"
        );
        let (saddr, alen) = if is_v6(&pkt) { (8, 32) } else { (12, 8) };
        for i in ETH_HLEN..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0x04;
            // Bytes of the IPv4 header are covered by its checksum; L4
            // bytes and the addresses (pseudo-header) by the L4 checksum.
            let in_ip_header = !is_v6(&pkt) && i < l4_off(&pkt);
            let addrs = ETH_HLEN + saddr..ETH_HLEN + saddr + alen;
            let in_l4_sum = i >= l4_off(&pkt) || addrs.contains(&i);
            let caught_by_ip = in_ip_header && !ip_csum_ok(&bad);
            let caught_by_l4 = in_l4_sum && !l4_csum_ok(&bad);
            assert!(
                (!in_ip_header || caught_by_ip) && (!in_l4_sum || caught_by_l4),
                "flipping a bit of byte {i} went unnoticed by the checksum checks"
            );
        }
    }
}
