//! Building Ethernet/IPv4/TCP/UDP frames, reading their fields, and
//! checksums computed from scratch (never with the code under test).
use std::net::{Ipv4Addr, SocketAddrV4};

use portfwd_common::{PROTO_TCP, PROTO_UDP};

use crate::harness::*;

// ---------------------------------------------------------------------------
// Packet building.
// ---------------------------------------------------------------------------

/// The IPv4 header of a packet to build.
#[derive(Clone)]
pub struct Ip {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// IP options, a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
    /// Flags and fragment offset (8-byte units).
    pub frag: u16,
    /// The identification field.
    pub id: u16,
}

impl Ip {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            options: Vec::new(),
            frag: 0,
            id: 0x1234,
        }
    }

    pub fn id(mut self, id: u16) -> Self {
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
}

pub fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

/// Ethernet + IPv4 (header checksum filled in) + `l4` as given.
pub fn ipv4_frame(ip: &Ip, l4: &[u8]) -> Vec<u8> {
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
    p.extend_from_slice(&ip.id.to_be_bytes());
    p.extend_from_slice(&ip.frag.to_be_bytes());
    p.push(64); // TTL
    p.push(ip.proto);
    p.extend_from_slice(&[0, 0]); // checksum, below
    p.extend_from_slice(&ip.src.octets());
    p.extend_from_slice(&ip.dst.octets());
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

/// A TCP packet from `src` to `dst`, every checksum right.
pub fn tcp_with(ip: &Ip, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_frame(
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

pub fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
    tcp_with(
        &Ip::new(*src.ip(), *dst.ip(), PROTO_TCP),
        src.port(),
        dst.port(),
        flags,
        &[],
    )
}

/// A UDP packet from `src` to `dst`, every checksum right (a computed zero
/// sent as 0xffff).
pub fn udp_with(ip: &Ip, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_frame(ip, &udp_datagram(sport, dport, payload));
    fix_l4_csum(&mut p);
    p
}

pub fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
    udp_with(
        &Ip::new(*src.ip(), *dst.ip(), PROTO_UDP),
        src.port(),
        dst.port(),
        payload,
    )
}

// ---------------------------------------------------------------------------
// Field readers.
// ---------------------------------------------------------------------------

pub fn ihl(p: &[u8]) -> usize {
    ((p[ETH_HLEN] & 0x0f) as usize) * 4
}

pub fn l4_off(p: &[u8]) -> usize {
    ETH_HLEN + ihl(p)
}

pub fn ip_total_len(p: &[u8]) -> usize {
    u16::from_be_bytes([p[ETH_HLEN + 2], p[ETH_HLEN + 3]]) as usize
}

pub fn ip_proto(p: &[u8]) -> u8 {
    p[ETH_HLEN + 9]
}

pub fn ip_addr(p: &[u8], off: usize) -> Ipv4Addr {
    let o = ETH_HLEN + off;
    Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3])
}

pub fn port(p: &[u8], off: usize) -> u16 {
    let o = l4_off(p) + off;
    u16::from_be_bytes([p[o], p[o + 1]])
}

pub fn src_of(p: &[u8]) -> SocketAddrV4 {
    ep(ip_addr(p, 12), port(p, 0))
}

pub fn dst_of(p: &[u8]) -> SocketAddrV4 {
    ep(ip_addr(p, 16), port(p, 2))
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

/// The L4 bytes the IPv4 header accounts for.
pub fn l4_bytes(p: &[u8]) -> &[u8] {
    &p[l4_off(p)..ETH_HLEN + ip_total_len(p)]
}

/// The pseudo-header's contribution to the L4 checksum.
pub fn pseudo_sum(p: &[u8]) -> u64 {
    let mut ph = Vec::with_capacity(12);
    ph.extend_from_slice(&p[ETH_HLEN + 12..ETH_HLEN + 20]);
    ph.extend_from_slice(&[0, ip_proto(p)]);
    ph.extend_from_slice(&(l4_bytes(p).len() as u16).to_be_bytes());
    u64::from(ones_sum(&ph, 0))
}

pub fn ip_csum_ok(p: &[u8]) -> bool {
    ones_sum(ip_header(p), 0) == 0xffff
}

/// True if the TCP/UDP checksum verifies, pseudo-header included. A UDP
/// checksum of zero ("none") does not count as verifying.
pub fn l4_csum_ok(p: &[u8]) -> bool {
    if ip_proto(p) == PROTO_UDP && l4_csum(p) == 0 {
        return false;
    }
    ones_sum(l4_bytes(p), pseudo_sum(p)) == 0xffff
}

pub fn fix_ip_csum(p: &mut [u8]) {
    let len = ihl(p);
    fix_ip_csum_over(p, len);
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

/// `p` with both checksum fields zeroed, to compare the rest of two packets.
pub fn without_csums(p: &[u8]) -> Vec<u8> {
    let mut c = p.to_vec();
    c[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
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
/// right), its L3 payload cut after each of `cuts` bytes (multiples of 8):
/// each with its own IPv4 header (offset, MF, checksum).
pub fn fragments(whole: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let hl = ihl(whole);
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
            f.extend_from_slice(&payload[w[0]..w[1]]);
            let total = (hl + w[1] - w[0]) as u16;
            f[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
            let word = (w[0] / 8) as u16 | if last { 0 } else { IP_MF };
            f[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&word.to_be_bytes());
            fix_ip_csum(&mut f);
            f
        })
        .collect()
}

/// An ICMP error from `src` to `dst`: type, code, the 4 bytes after the
/// checksum, and `quote` (the start of the packet it is about, from its L3
/// header on); every checksum right.
pub fn icmp_error(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    quote: &[u8],
) -> Vec<u8> {
    let mut icmp = vec![ty, code, 0, 0];
    icmp.extend_from_slice(&rest);
    icmp.extend_from_slice(quote);
    let c = !ones_sum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(&Ip::new(src, dst, PROTO_ICMP), &icmp)
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
    ones_sum(icmp_message(p), 0) == 0xffff
}

/// The quoted packet of an ICMP error frame, as a frame of its own (with a
/// copy of the outer Ethernet header), so the field readers apply.
pub fn quote_of(p: &[u8]) -> Vec<u8> {
    let mut q = p[..ETH_HLEN].to_vec();
    q.extend_from_slice(&icmp_message(p)[8..]);
    q
}

/// `out` is the ICMP error `expected` (built from scratch) up to its four
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
        p[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
        let icmp = l4_off(p);
        p[icmp + 2..icmp + 4].copy_from_slice(&[0, 0]);
        let inner = icmp + 8;
        p[inner + 10..inner + 12].copy_from_slice(&[0, 0]);
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

/// The helpers every other test relies on: a known IPv4 header, and a
/// checksum that verifies until any byte changes. Needs no BPF.
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

    for pkt in [
        tcp_with(
            &Ip::new(CLIENT, HOST, PROTO_TCP).options(&[1, 1, 1, 0]),
            40_000,
            8080,
            TCP_SYN | TCP_ACK,
            b"odd",
        ),
        udp(ep(CLIENT, 50_000), ep(HOST, 5353), b"an odd-length payload"),
    ] {
        assert!(
            ip_csum_ok(&pkt) && l4_csum_ok(&pkt),
            "a freshly built packet must verify"
        );
        for i in ETH_HLEN..pkt.len() {
            let mut bad = pkt.clone();
            bad[i] ^= 0x04;
            // Bytes of the IPv4 header are covered by its checksum; L4
            // bytes and the addresses (pseudo-header) by the L4 checksum.
            let in_ip_header = i < l4_off(&pkt);
            let in_l4_sum = i >= l4_off(&pkt) || (ETH_HLEN + 12..ETH_HLEN + 20).contains(&i);
            let caught_by_ip = in_ip_header && !ip_csum_ok(&bad);
            let caught_by_l4 = in_l4_sum && !l4_csum_ok(&bad);
            assert!(
                (!in_ip_header || caught_by_ip) && (!in_l4_sum || caught_by_l4),
                "flipping a bit of byte {i} went unnoticed by the checksum checks"
            );
        }
    }
}
