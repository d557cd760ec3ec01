//! The TC programs, run for real in the kernel with BPF_PROG_TEST_RUN.
//!
//! Nothing is attached and no packet reaches a network: each test loads its
//! own copy of the eBPF object (private, unpinned maps), fills the maps the way
//! userspace would, hands hand-built Ethernet frames to `pf_ext_in` (DNAT) and
//! `pf_br_in` (reverse NAT) and checks the verdict, the bytes that come out,
//! the conntrack entries and the counters.
//!
//! Under test_run `bpf_redirect_neigh` only records the target and returns
//! TC_ACT_REDIRECT, and the skb's device is the loopback (ifindex 1).
//!
//! The tests need root (BPF). Without it they are skipped, unless CI=true,
//! where that is a failure.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};

use aya::{
    programs::{TestRun, TestRunOptions},
    Ebpf,
};
use portfwd::{
    datapath::{self, Maps},
    spec::Spec,
};
use portfwd_common::{
    CtEntry, CtKey, CT_DIR_FORWARD, CT_DIR_REPLY, CT_F_ACK, CT_F_SYN, CT_LIFETIME_TCP_NS,
    CT_LIFETIME_TCP_SYN_NS, CT_LIFETIME_UDP_NS, CT_M_WILDCARD, PROG_BRIDGE_INGRESS,
    PROG_EXTERNAL_INGRESS, PROTO_TCP, PROTO_UDP, V4,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_IPV6: u16 = 0x86dd;
const PROTO_ICMP: u8 = 1;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// IPv4 flags/fragment-offset word.
const IP_DF: u16 = 0x4000;
const IP_MF: u16 = 0x2000;

const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);
/// Two of the host's addresses (both in pf_local).
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const HOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// An address that is not the host's.
const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
const DNS_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
const OTHER_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 9);

/// The bridge the mappings point at (redirect_neigh is not carried out
/// under test_run, so it need not exist).
const BRIDGE_IFINDEX: u32 = 42;
/// The value stored with the host's addresses in pf_local.
const EXT_IFINDEX: u32 = 2;
/// The device of a test_run skb: the loopback.
const TEST_RUN_IFINDEX: u32 = 1;

/// The published ports of the standard fixture.
const WEB_SPEC: &str = "8080=172.30.0.2:80";
const DNS_SPEC: &str = "5353=172.30.0.3:53/udp";

fn ep(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

// ---------------------------------------------------------------------------
// The datapath under test.
// ---------------------------------------------------------------------------

struct Datapath {
    maps: Maps,
    // The programs; kept alive with the maps they were loaded with.
    ebpf: Ebpf,
}

/// What a program did with a packet.
struct Run {
    verdict: u32,
    out: Vec<u8>,
}

/// A fresh datapath, or None if this machine cannot run BPF programs (and
/// this is not CI).
fn datapath(test: &str) -> Option<Datapath> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: the datapath tests need root (BPF_PROG_TEST_RUN) and CI=true forbids skipping them");
        }
        eprintln!("SKIPPED {test}: the datapath tests need root (BPF_PROG_TEST_RUN)");
        return None;
    }
    let mut ebpf =
        datapath::load(None).expect("loading the eBPF object and verifying its programs");
    let maps = Maps::take(&mut ebpf).expect("taking the maps out of the eBPF object");
    Some(Datapath { maps, ebpf })
}

/// The usual setup: two host addresses, a TCP and a UDP wildcard mapping.
fn standard(test: &str) -> Option<Datapath> {
    let mut dp = datapath(test)?;
    dp.local(HOST);
    dp.local(HOST2);
    dp.publish(WEB_SPEC);
    dp.publish(DNS_SPEC);
    Some(dp)
}

impl Datapath {
    fn local(&mut self, addr: Ipv4Addr) {
        self.maps
            .local_addrs
            .insert(be(addr), EXT_IFINDEX, 0)
            .expect("inserting into pf_local");
    }

    fn publish(&mut self, spec: &str) {
        let spec: Spec = spec.parse().expect("a valid SPEC");
        for m in &spec.mappings {
            self.maps
                .mappings
                .insert(m.host.key(), m.backend(BRIDGE_IFINDEX), 0)
                .expect("inserting into pf_map");
        }
    }

    fn unpublish(&mut self, spec: &str) {
        let spec: Spec = spec.parse().expect("a valid SPEC");
        for m in &spec.mappings {
            self.maps
                .mappings
                .remove(&m.host.key())
                .expect("removing from pf_map");
        }
    }

    /// Runs `prog` on `pkt`. None if the kernel refused to build an skb
    /// from a frame too short for the network header its ethertype names
    /// (test_run wants a whole IPv4 or IPv6 header), so the program never ran.
    fn try_run(&mut self, prog: &str, pkt: &[u8]) -> Option<Run> {
        let mut out = vec![0u8; pkt.len() + 256];
        let res = datapath::classifier(&mut self.ebpf, prog)
            .expect("the classifier is in the object")
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ..Default::default()
            });
        match res {
            Ok(res) => {
                out.truncate(res.data_size_out as usize);
                Some(Run {
                    verdict: res.return_value,
                    out,
                })
            }
            Err(_) if too_short_for_test_run(pkt) => None,
            Err(e) => panic!("BPF_PROG_TEST_RUN of {prog} on {} bytes: {e:?}", pkt.len()),
        }
    }

    fn run(&mut self, prog: &str, pkt: &[u8]) -> Run {
        self.try_run(prog, pkt).unwrap_or_else(|| {
            panic!(
                "BPF_PROG_TEST_RUN of {prog} refused a {}-byte frame",
                pkt.len()
            )
        })
    }

    /// A packet arriving on an external interface.
    fn ext(&mut self, pkt: &[u8]) -> Run {
        self.run(PROG_EXTERNAL_INGRESS, pkt)
    }

    /// A packet arriving from the bridge.
    fn br(&mut self, pkt: &[u8]) -> Run {
        self.run(PROG_BRIDGE_INGRESS, pkt)
    }

    fn counter(&self, name: &str) -> u64 {
        self.maps
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no counter named {name}"))
            .1
    }

    fn ct(&self, key: &CtKey<V4>) -> Option<CtEntry<V4>> {
        self.maps.conntrack.get(key, 0).ok()
    }

    fn ct_entries(&self) -> Vec<(CtKey<V4>, CtEntry<V4>)> {
        self.maps
            .conntrack
            .iter()
            .map(|r| r.expect("iterating pf_ct"))
            .collect()
    }
}

/// True for frames BPF_PROG_TEST_RUN may refuse (EINVAL) before running the
/// program: IPv4 or IPv6 ethertype without a whole fixed network header.
fn too_short_for_test_run(pkt: &[u8]) -> bool {
    match u16::from_be_bytes([pkt[12], pkt[13]]) {
        ETH_P_IP => pkt.len() < ETH_HLEN + 20,
        ETH_P_IPV6 => pkt.len() < ETH_HLEN + 40,
        _ => false,
    }
}

fn ct_key(src: SocketAddrV4, dst: SocketAddrV4, proto: u8) -> CtKey<V4> {
    CtKey {
        saddr_be: be(*src.ip()),
        daddr_be: be(*dst.ip()),
        sport_be: src.port().to_be(),
        dport_be: dst.port().to_be(),
        proto,
        pad: [0; 3],
    }
}

// ---------------------------------------------------------------------------
// Packet building.
// ---------------------------------------------------------------------------

/// The IPv4 header of a packet to build.
#[derive(Clone)]
struct Ip {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    /// IP options, a multiple of 4 bytes, at most 40.
    options: Vec<u8>,
    /// Flags and fragment offset (8-byte units).
    frag: u16,
}

impl Ip {
    fn new(src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Self {
        Self {
            src,
            dst,
            proto,
            options: Vec::new(),
            frag: 0,
        }
    }

    fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        self
    }

    fn frag(mut self, frag: u16) -> Self {
        self.frag = frag;
        self
    }
}

fn eth_header(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

/// Ethernet + IPv4 (header checksum filled in) + `l4` as given.
fn ipv4_frame(ip: &Ip, l4: &[u8]) -> Vec<u8> {
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
    p.extend_from_slice(&0x1234u16.to_be_bytes()); // identification
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
fn tcp_segment(sport: u16, dport: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
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
fn udp_datagram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
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
fn tcp_with(ip: &Ip, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
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

fn tcp(src: SocketAddrV4, dst: SocketAddrV4, flags: u8) -> Vec<u8> {
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
fn udp_with(ip: &Ip, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = ipv4_frame(ip, &udp_datagram(sport, dport, payload));
    fix_l4_csum(&mut p);
    p
}

fn udp(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
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

fn ihl(p: &[u8]) -> usize {
    ((p[ETH_HLEN] & 0x0f) as usize) * 4
}

fn l4_off(p: &[u8]) -> usize {
    ETH_HLEN + ihl(p)
}

fn ip_total_len(p: &[u8]) -> usize {
    u16::from_be_bytes([p[ETH_HLEN + 2], p[ETH_HLEN + 3]]) as usize
}

fn ip_proto(p: &[u8]) -> u8 {
    p[ETH_HLEN + 9]
}

fn ip_addr(p: &[u8], off: usize) -> Ipv4Addr {
    let o = ETH_HLEN + off;
    Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3])
}

fn port(p: &[u8], off: usize) -> u16 {
    let o = l4_off(p) + off;
    u16::from_be_bytes([p[o], p[o + 1]])
}

fn src_of(p: &[u8]) -> SocketAddrV4 {
    ep(ip_addr(p, 12), port(p, 0))
}

fn dst_of(p: &[u8]) -> SocketAddrV4 {
    ep(ip_addr(p, 16), port(p, 2))
}

/// Offset of the L4 checksum in the frame.
fn l4_csum_off(p: &[u8]) -> usize {
    l4_off(p) + if ip_proto(p) == PROTO_TCP { 16 } else { 6 }
}

fn l4_csum(p: &[u8]) -> u16 {
    let o = l4_csum_off(p);
    u16::from_be_bytes([p[o], p[o + 1]])
}

fn set_l4_csum(p: &mut [u8], csum: u16) {
    let o = l4_csum_off(p);
    p[o..o + 2].copy_from_slice(&csum.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Checksums, computed from scratch.
// ---------------------------------------------------------------------------

/// One's-complement sum of `data` as 16-bit big-endian words (an odd last
/// byte padded with zero), added to `acc`, folded to 16 bits.
fn ones_sum(data: &[u8], acc: u64) -> u16 {
    let mut s = acc;
    for w in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn ip_header(p: &[u8]) -> &[u8] {
    &p[ETH_HLEN..ETH_HLEN + ihl(p)]
}

/// The L4 bytes the IPv4 header accounts for.
fn l4_bytes(p: &[u8]) -> &[u8] {
    &p[l4_off(p)..ETH_HLEN + ip_total_len(p)]
}

/// The pseudo-header's contribution to the L4 checksum.
fn pseudo_sum(p: &[u8]) -> u64 {
    let mut ph = Vec::with_capacity(12);
    ph.extend_from_slice(&p[ETH_HLEN + 12..ETH_HLEN + 20]);
    ph.extend_from_slice(&[0, ip_proto(p)]);
    ph.extend_from_slice(&(l4_bytes(p).len() as u16).to_be_bytes());
    u64::from(ones_sum(&ph, 0))
}

fn ip_csum_ok(p: &[u8]) -> bool {
    ones_sum(ip_header(p), 0) == 0xffff
}

/// True if the TCP/UDP checksum verifies, pseudo-header included. A UDP
/// checksum of zero ("none") does not count as verifying.
fn l4_csum_ok(p: &[u8]) -> bool {
    if ip_proto(p) == PROTO_UDP && l4_csum(p) == 0 {
        return false;
    }
    ones_sum(l4_bytes(p), pseudo_sum(p)) == 0xffff
}

fn fix_ip_csum(p: &mut [u8]) {
    let len = ihl(p);
    fix_ip_csum_over(p, len);
}

/// Sets the IPv4 header checksum computed over the first `len` bytes of the
/// header (for headers whose IHL is deliberately wrong).
fn fix_ip_csum_over(p: &mut [u8], len: usize) {
    p[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    let c = !ones_sum(&p[ETH_HLEN..ETH_HLEN + len], 0);
    p[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&c.to_be_bytes());
}

fn fix_l4_csum(p: &mut [u8]) {
    set_l4_csum(p, 0);
    let mut c = !ones_sum(l4_bytes(p), pseudo_sum(p));
    if c == 0 && ip_proto(p) == PROTO_UDP {
        // RFC 768: a computed zero is sent as all ones.
        c = 0xffff;
    }
    set_l4_csum(p, c);
}

/// `p` with both checksum fields zeroed, to compare the rest of two packets.
fn without_csums(p: &[u8]) -> Vec<u8> {
    let mut c = p.to_vec();
    c[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
    set_l4_csum(&mut c, 0);
    c
}

/// `out` is `expected` (the rewritten packet built from scratch) with both
/// checksums right: every other byte as expected, checksums verified from
/// scratch.
fn assert_translated(what: &str, out: &[u8], expected: &[u8]) {
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

fn assert_untouched(what: &str, run: &Run, pkt: &[u8]) {
    assert_eq!(
        run.verdict, TC_ACT_OK,
        "{what}: verdict {} instead of TC_ACT_OK",
        run.verdict
    );
    assert_eq!(run.out, pkt, "{what}: the packet was modified");
}

// ---------------------------------------------------------------------------
// Deterministic pseudorandom bytes (splitmix64).
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

// ---------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------

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

#[test]
fn tcp_syn_to_a_published_port_is_dnated_with_both_conntrack_entries() {
    let Some(mut dp) =
        standard("tcp_syn_to_a_published_port_is_dnated_with_both_conntrack_entries")
    else {
        return;
    };
    let client = ep(CLIENT, 40_000);
    let host = ep(HOST, 8080);
    let container = ep(CONTAINER, 80);
    let syn = tcp(client, host, TCP_SYN);

    let run = dp.ext(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN to a published port must be redirected to the bridge"
    );
    assert_eq!(
        dst_of(&run.out),
        container,
        "the destination must be the container's"
    );
    assert_eq!(src_of(&run.out), client, "the source must be left alone");
    assert_translated("DNATed SYN", &run.out, &tcp(client, container, TCP_SYN));

    let fwd = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("no forward conntrack entry keyed by the packet's own tuple");
    assert_eq!(fwd.dir, CT_DIR_FORWARD, "forward entry: dir");
    assert_eq!(
        fwd.nat_addr_be,
        be(CONTAINER),
        "forward entry: NAT address is the container's"
    );
    assert_eq!(
        fwd.nat_port_be,
        80u16.to_be(),
        "forward entry: NAT port is the container's"
    );
    assert_eq!(
        fwd.ifindex, BRIDGE_IFINDEX,
        "forward entry: ifindex is the bridge"
    );
    assert_eq!(
        fwd.mflags, CT_M_WILDCARD,
        "forward entry: came through the wildcard mapping"
    );
    assert_eq!(fwd.flags, CT_F_SYN, "forward entry: flags seen");
    assert_eq!(fwd.packets, 1, "forward entry: packets");
    assert_eq!(
        fwd.bytes,
        ip_total_len(&syn) as u64,
        "forward entry: bytes (L3 length)"
    );
    assert!(fwd.created_ns > 0, "forward entry: created_ns not set");
    assert_eq!(
        fwd.expires_ns - fwd.created_ns,
        CT_LIFETIME_TCP_SYN_NS,
        "forward entry: a SYN gets the short handshake lifetime"
    );

    let rep = dp
        .ct(&ct_key(container, client, PROTO_TCP))
        .expect("no reply conntrack entry keyed container -> client");
    assert_eq!(rep.dir, CT_DIR_REPLY, "reply entry: dir");
    assert_eq!(
        rep.nat_addr_be,
        be(HOST),
        "reply entry: NAT address is the host address the client used"
    );
    assert_eq!(
        rep.nat_port_be,
        8080u16.to_be(),
        "reply entry: NAT port is the host port"
    );
    assert_eq!(
        rep.ifindex, TEST_RUN_IFINDEX,
        "reply entry: ifindex is the one the client came in on"
    );
    assert_eq!(
        rep.mflags, CT_M_WILDCARD,
        "reply entry: came through the wildcard mapping"
    );
    assert_eq!(
        (rep.packets, rep.bytes, rep.flags),
        (0, 0, 0),
        "reply entry: nothing seen yet"
    );
    assert_eq!(
        rep.created_ns, fwd.created_ns,
        "both entries are created together"
    );
    assert_eq!(
        rep.expires_ns, fwd.expires_ns,
        "both entries expire together"
    );

    assert_eq!(
        dp.ct_entries().len(),
        2,
        "exactly two conntrack entries per flow"
    );
    assert_eq!(dp.counter("dnat"), 1, "counter dnat");
    assert_eq!(dp.counter("ct_new"), 1, "counter ct_new");
    assert_eq!(dp.counter("reverse_nat"), 0, "counter reverse_nat");
}

#[test]
fn the_reply_finds_the_entry_the_syn_created() {
    let Some(mut dp) = standard("the_reply_finds_the_entry_the_syn_created") else {
        return;
    };
    let client = ep(CLIENT, 40_001);
    let host = ep(HOST2, 8080);
    let container = ep(CONTAINER, 80);
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the SYN must be DNATed"
    );

    // The container's SYN-ACK, on the tuple the reply entry is keyed by.
    let entries = dp.ct_entries();
    let (rkey, _) = entries
        .iter()
        .find(|(_, e)| e.dir == CT_DIR_REPLY)
        .expect("the SYN created no reply entry");
    assert_eq!(
        *rkey,
        ct_key(container, client, PROTO_TCP),
        "the reply entry's key is container -> client"
    );
    let from = ep(
        Ipv4Addr::from(rkey.saddr_be.to_ne_bytes()),
        u16::from_be(rkey.sport_be),
    );
    let to = ep(
        Ipv4Addr::from(rkey.daddr_be.to_ne_bytes()),
        u16::from_be(rkey.dport_be),
    );
    let syn_ack = tcp(from, to, TCP_SYN | TCP_ACK);
    assert!(
        l4_csum_ok(&syn_ack) && ip_csum_ok(&syn_ack),
        "test bug: the SYN-ACK's checksums"
    );

    let run = dp.br(&syn_ack);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the container's reply must be redirected to the client's interface"
    );
    assert_eq!(
        src_of(&run.out),
        host,
        "the reply's source must be the host address and port the client used"
    );
    assert_eq!(
        dst_of(&run.out),
        client,
        "the reply's destination must be left alone"
    );
    assert_translated(
        "reverse-NATed SYN-ACK",
        &run.out,
        &tcp(host, client, TCP_SYN | TCP_ACK),
    );
    assert_eq!(dp.counter("reverse_nat"), 1, "counter reverse_nat");

    let rep = dp.ct(rkey).expect("the reply entry vanished");
    assert_eq!(rep.packets, 1, "reply entry: the SYN-ACK is counted");
    assert_eq!(
        rep.bytes,
        ip_total_len(&syn_ack) as u64,
        "reply entry: bytes"
    );
    assert_eq!(rep.flags, CT_F_SYN | CT_F_ACK, "reply entry: flags seen");
    assert!(
        rep.expires_ns >= rep.created_ns + CT_LIFETIME_TCP_NS,
        "reply entry: an ACK must extend the lifetime to the established one"
    );

    // The client's ACK follows the existing forward entry.
    let ack = tcp(client, host, TCP_ACK);
    let run = dp.ext(&ack);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the client's ACK must be DNATed"
    );
    assert_translated("DNATed ACK", &run.out, &tcp(client, container, TCP_ACK));
    assert_eq!(
        dp.counter("ct_new"),
        1,
        "the ACK must reuse the flow's entries, not create new ones"
    );
    assert_eq!(dp.counter("dnat"), 2, "counter dnat");
    assert_eq!(
        dp.ct_entries().len(),
        2,
        "still exactly two conntrack entries"
    );
    let fwd = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("the forward entry vanished");
    assert_eq!(fwd.packets, 2, "forward entry: SYN and ACK counted");
    assert_eq!(fwd.flags, CT_F_SYN | CT_F_ACK, "forward entry: flags seen");
    assert!(
        fwd.expires_ns >= fwd.created_ns + CT_LIFETIME_TCP_NS,
        "forward entry: an ACK must extend the lifetime to the established one"
    );

    // Data from the container is reverse-NATed too.
    let data = tcp_with(
        &Ip::new(CONTAINER, CLIENT, PROTO_TCP),
        80,
        client.port(),
        TCP_PSH | TCP_ACK,
        b"HTTP/1.0 200 OK\r\n\r\n",
    );
    let run = dp.br(&data);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "reply data must be reverse-NATed"
    );
    let want = tcp_with(
        &Ip::new(HOST2, CLIENT, PROTO_TCP),
        8080,
        client.port(),
        TCP_PSH | TCP_ACK,
        b"HTTP/1.0 200 OK\r\n\r\n",
    );
    assert_translated("reverse-NATed reply data", &run.out, &want);
    assert_eq!(dp.counter("reverse_nat"), 2, "counter reverse_nat");

    // On the bridge, only reply tuples are translated: the client's own
    // tuple (the forward entry's key) and a stranger are left alone.
    let fwd_tuple = tcp(client, host, TCP_ACK);
    assert_untouched(
        "the forward tuple arriving on the bridge",
        &dp.br(&fwd_tuple),
        &fwd_tuple,
    );
    let stranger = tcp(
        ep(CONTAINER, 80),
        ep(OTHER_CLIENT, 40_001),
        TCP_SYN | TCP_ACK,
    );
    assert_untouched(
        "a container packet of no known flow",
        &dp.br(&stranger),
        &stranger,
    );
    // And on the external side a reply tuple is not a forward flow.
    let reply_tuple = tcp(container, client, TCP_ACK);
    assert_untouched(
        "the reply tuple arriving from outside",
        &dp.ext(&reply_tuple),
        &reply_tuple,
    );
    assert_eq!(
        dp.counter("reverse_nat"),
        2,
        "counter reverse_nat after the non-matching packets"
    );
}

#[test]
fn udp_to_a_published_port_is_dnated_and_keeps_its_checksum_right() {
    let Some(mut dp) = standard("udp_to_a_published_port_is_dnated_and_keeps_its_checksum_right")
    else {
        return;
    };
    let host = ep(HOST, 5353);
    let container = ep(DNS_CONTAINER, 53);
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

    // A datagram with a real checksum.
    let client = ep(CLIENT, 50_000);
    let pkt = udp(client, host, query);
    assert!(
        l4_csum(&pkt) != 0 && l4_csum_ok(&pkt),
        "test bug: the datagram's checksum"
    );
    let run = dp.ext(&pkt);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "UDP to a published port must be redirected to the bridge"
    );
    assert_eq!(
        dst_of(&run.out),
        container,
        "the destination must be the container's"
    );
    assert_translated("DNATed UDP", &run.out, &udp(client, container, query));
    let fwd = dp
        .ct(&ct_key(client, host, PROTO_UDP))
        .expect("no UDP forward entry");
    assert_eq!(
        (
            fwd.dir,
            fwd.nat_addr_be,
            fwd.nat_port_be,
            fwd.ifindex,
            fwd.flags
        ),
        (
            CT_DIR_FORWARD,
            be(DNS_CONTAINER),
            53u16.to_be(),
            BRIDGE_IFINDEX,
            0
        ),
        "UDP forward entry"
    );
    assert_eq!(
        fwd.expires_ns - fwd.created_ns,
        CT_LIFETIME_UDP_NS,
        "UDP forward entry: lifetime"
    );
    let rep = dp
        .ct(&ct_key(container, client, PROTO_UDP))
        .expect("no UDP reply entry");
    assert_eq!(
        (rep.dir, rep.nat_addr_be, rep.nat_port_be, rep.ifindex),
        (CT_DIR_REPLY, be(HOST), 5353u16.to_be(), TEST_RUN_IFINDEX),
        "UDP reply entry"
    );

    // The answer comes back from the host port.
    let answer = udp(container, client, b"answer");
    let run = dp.br(&answer);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the UDP answer must be reverse-NATed"
    );
    assert_translated("reverse-NATed UDP", &run.out, &udp(host, client, b"answer"));

    // A datagram without a checksum (0) must stay without one.
    let client = ep(CLIENT, 50_001);
    let mut pkt = udp(client, host, query);
    set_l4_csum(&mut pkt, 0);
    let run = dp.ext(&pkt);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "checksum-less UDP to a published port must be DNATed"
    );
    assert_eq!(
        l4_csum(&run.out),
        0,
        "a UDP checksum of 0 (none) must stay 0 after the rewrite"
    );
    assert!(
        ip_csum_ok(&run.out),
        "checksum-less UDP: the IPv4 header checksum does not verify"
    );
    assert_eq!(
        without_csums(&run.out),
        without_csums(&udp(client, container, query)),
        "checksum-less UDP: bytes other than the checksums differ from the expected rewrite"
    );

    // A datagram whose checksum after the rewrite computes to zero must carry
    // 0xffff (zero would mean "no checksum"). Pick the last payload word so
    // that the rewritten datagram sums to 0xffff.
    let client = ep(CLIENT, 50_002);
    let mut payload = b"zero-sum".to_vec();
    payload.extend_from_slice(&[0, 0]);
    let n = payload.len();
    let mut after = ipv4_frame(
        &Ip::new(CLIENT, DNS_CONTAINER, PROTO_UDP),
        &udp_datagram(client.port(), 53, &payload),
    );
    let sum = ones_sum(l4_bytes(&after), pseudo_sum(&after));
    payload[n - 2..].copy_from_slice(&(!sum).to_be_bytes());
    after = udp(client, container, &payload);
    assert_eq!(
        l4_csum(&after),
        0xffff,
        "test bug: the rewritten datagram should checksum to zero"
    );
    let pkt = udp(client, host, &payload);
    assert!(l4_csum_ok(&pkt), "test bug: the datagram's checksum");
    let run = dp.ext(&pkt);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "UDP to a published port must be DNATed"
    );
    assert_eq!(
        l4_csum(&run.out),
        0xffff,
        "a UDP checksum that computes to zero after the rewrite must be sent as 0xffff"
    );
    assert_translated("DNATed UDP with a zero computed checksum", &run.out, &after);

    assert_eq!(dp.counter("dnat"), 3, "counter dnat");
    assert_eq!(
        dp.counter("ct_new"),
        3,
        "counter ct_new: one per client port"
    );
    assert_eq!(dp.counter("reverse_nat"), 1, "counter reverse_nat");
}

#[test]
fn packets_that_are_not_for_a_published_port_are_left_alone() {
    let Some(mut dp) = standard("packets_that_are_not_for_a_published_port_are_left_alone") else {
        return;
    };
    let client = ep(CLIENT, 40_100);
    let syn = tcp(client, ep(HOST, 8080), TCP_SYN);
    let l4 = l4_off(&syn);
    let dgram = udp(client, ep(HOST, 5353), b"query");
    let ul4 = l4_off(&dgram);

    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "TCP SYN to an unpublished port",
            tcp(client, ep(HOST, 8081), TCP_SYN),
        ),
        (
            "TCP ACK to an unpublished port",
            tcp(client, ep(HOST, 8081), TCP_ACK),
        ),
        (
            "UDP to a port published for TCP only",
            udp(client, ep(HOST, 8080), b"x"),
        ),
        (
            "TCP to a port published for UDP only",
            tcp(client, ep(HOST, 5353), TCP_SYN),
        ),
        (
            "TCP SYN to a wildcard port on an address that is not the host's",
            tcp(client, ep(ELSEWHERE, 8080), TCP_SYN),
        ),
        (
            "UDP to a wildcard port on an address that is not the host's",
            udp(client, ep(ELSEWHERE, 5353), b"x"),
        ),
        (
            "TCP SYN to a published port on 127.0.0.1 from the wire",
            tcp(client, ep(Ipv4Addr::LOCALHOST, 8080), TCP_SYN),
        ),
        (
            "TCP from the published port (source, not destination)",
            tcp(ep(CLIENT, 8080), ep(HOST, 40_100), TCP_SYN),
        ),
    ];

    // ICMP echo request to the host.
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
    icmp.extend_from_slice(b"ping-payload");
    let c = !ones_sum(&icmp, 0);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    cases.push((
        "ICMP echo to the host",
        ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_ICMP), &icmp),
    ));

    // ARP request for the host's address.
    let mut arp = eth_header(ETH_P_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x02]);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&HOST.octets());
    cases.push(("ARP", arp));

    // IPv6 TCP SYN to port 8080.
    let mut v6 = eth_header(ETH_P_IPV6);
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, PROTO_TCP, 64]);
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    v6.extend_from_slice(&tcp_segment(40_100, 8080, TCP_SYN, 1, 0, &[]));
    cases.push(("IPv6 ethertype", v6));

    // An 802.1Q-tagged IPv4 SYN to the published port.
    let mut vlan = eth_header(ETH_P_8021Q);
    vlan.extend_from_slice(&[0, 10]);
    vlan.extend_from_slice(&ETH_P_IP.to_be_bytes());
    vlan.extend_from_slice(&syn[ETH_HLEN..]);
    cases.push(("VLAN-tagged IPv4 (ethertype 0x8100)", vlan));

    // Truncated packets. (Shorter IPv4 frames are below, apart: test_run
    // may refuse them.)
    let mut eth_only = syn[..ETH_HLEN].to_vec();
    eth_only[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    cases.push(("Ethernet header only (ARP ethertype)", eth_only));
    cases.push(("IPv4 header, no TCP header", syn[..l4].to_vec()));
    cases.push(("TCP header cut after the ports", syn[..l4 + 4].to_vec()));
    cases.push((
        "TCP header cut before the checksum",
        syn[..l4 + 16].to_vec(),
    ));
    cases.push((
        "TCP header cut inside the checksum",
        syn[..l4 + 17].to_vec(),
    ));
    cases.push((
        "UDP header cut before the checksum",
        dgram[..ul4 + 6].to_vec(),
    ));
    cases.push((
        "UDP header cut inside the checksum",
        dgram[..ul4 + 7].to_vec(),
    ));
    let opts = tcp_with(
        &Ip::new(CLIENT, HOST, PROTO_TCP).options(&[1, 1, 1, 0]),
        40_100,
        8080,
        TCP_SYN,
        &[],
    );
    cases.push((
        "IPv4 header with options cut inside the options",
        opts[..ETH_HLEN + 22].to_vec(),
    ));
    let mut long_opts = vec![1u8; 36];
    long_opts.extend_from_slice(&[0; 4]);
    let long = tcp_with(
        &Ip::new(CLIENT, HOST, PROTO_TCP).options(&long_opts),
        40_100,
        8080,
        TCP_SYN,
        &[],
    );
    cases.push((
        "IPv4 header of 60 bytes cut at 20 (total length consistent)",
        long[..ETH_HLEN + 20].to_vec(),
    ));
    cases.push((
        "IPv4 header of 60 bytes cut at 40 (total length consistent)",
        long[..ETH_HLEN + 40].to_vec(),
    ));
    cases.push((
        "IPv4 header of 60 bytes, no TCP header",
        long[..ETH_HLEN + 60].to_vec(),
    ));
    cases.push((
        "IPv4 with options, TCP cut before the checksum",
        opts[..ETH_HLEN + 24 + 16].to_vec(),
    ));

    // Malformed IPv4 headers around an otherwise good SYN to the published port.
    let bad_header = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut p = syn.clone();
        f(&mut p);
        fix_ip_csum_over(&mut p, 20);
        p
    };
    cases.push((
        "IP version 6 in an IPv4 frame",
        bad_header(&|p| p[ETH_HLEN] = 0x65),
    ));
    cases.push(("IP version 0", bad_header(&|p| p[ETH_HLEN] = 0x05)));
    cases.push(("IP version 15", bad_header(&|p| p[ETH_HLEN] = 0xf5)));
    cases.push(("IHL 4", bad_header(&|p| p[ETH_HLEN] = 0x44)));
    cases.push(("IHL 0", bad_header(&|p| p[ETH_HLEN] = 0x40)));
    cases.push((
        "IHL 15 beyond the packet",
        bad_header(&|p| p[ETH_HLEN] = 0x4f),
    ));
    cases.push((
        "IPv4 total length shorter than the header",
        bad_header(&|p| p[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&19u16.to_be_bytes())),
    ));

    for (what, pkt) in &cases {
        assert_untouched(&format!("pf_ext_in, {what}"), &dp.ext(pkt), pkt);
        assert_untouched(&format!("pf_br_in, {what}"), &dp.br(pkt), pkt);
    }

    // IPv4 frames with less than a fixed IPv4 header: BPF_PROG_TEST_RUN
    // refuses them on recent kernels (EINVAL before the program runs), so
    // they are checked only where the kernel runs the program on them.
    for (what, pkt) in [
        (
            "Ethernet header only (IPv4 ethertype)",
            syn[..ETH_HLEN].to_vec(),
        ),
        ("IPv4 header cut at 1 byte", syn[..ETH_HLEN + 1].to_vec()),
        ("IPv4 header cut at 12 bytes", syn[..ETH_HLEN + 12].to_vec()),
        ("IPv4 header cut at 19 bytes", syn[..ETH_HLEN + 19].to_vec()),
    ] {
        for prog in [PROG_EXTERNAL_INGRESS, PROG_BRIDGE_INGRESS] {
            match dp.try_run(prog, &pkt) {
                Some(run) => assert_untouched(&format!("{prog}, {what}"), &run, &pkt),
                None => eprintln!(
                    "note: test_run refuses a {}-byte IPv4 frame ({what}); {prog} not run",
                    pkt.len()
                ),
            }
        }
    }
    assert_eq!(dp.counter("dnat"), 0, "counter dnat");
    assert_eq!(dp.counter("reverse_nat"), 0, "counter reverse_nat");
    assert_eq!(dp.counter("ct_new"), 0, "counter ct_new");
    assert!(
        dp.ct_entries().is_empty(),
        "conntrack entries were created: {:?}",
        dp.ct_entries()
    );
    let drops: Vec<_> = dp
        .maps
        .counters()
        .into_iter()
        .filter(|(n, v)| n.starts_with("drop_") && *v != 0)
        .collect();
    assert!(
        drops.is_empty(),
        "drops counted for untouched packets: {drops:?}"
    );

    // Sanity check of the fixture: the good SYN itself is DNATed.
    assert_eq!(
        dp.ext(&syn).verdict,
        TC_ACT_REDIRECT,
        "test bug: the reference SYN is not DNATed"
    );
}

#[test]
fn garbage_is_left_alone() {
    let Some(mut dp) = standard("garbage_is_left_alone") else {
        return;
    };
    let mut rng = Rng(0x5eed_da7a_0bad_cafe);
    let mut ran = 0;
    let total = 3000;
    for i in 0..total {
        // 14..=128 bytes of noise; at least a fixed IPv4 header when shaped
        // like IPv4 (test_run refuses shorter IPv4 frames).
        let min = if i % 3 == 0 { ETH_HLEN } else { ETH_HLEN + 20 };
        let len = min + rng.below((129 - min) as u64) as usize;
        let mut pkt = rng.bytes(len);
        match i % 3 {
            // Pure noise (rarely IPv4).
            0 => {}
            // Noise behind an IPv4 ethertype.
            1 => pkt[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes()),
            // Noise shaped like IPv4 TCP/UDP: version 4, any IHL, TCP or UDP,
            // towards one of the host's addresses on a published port.
            _ => {
                pkt[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
                if pkt.len() > ETH_HLEN + 20 {
                    pkt[ETH_HLEN] = 0x40 | (pkt[ETH_HLEN] & 0x0f);
                    pkt[ETH_HLEN + 9] = if rng.below(2) == 0 {
                        PROTO_TCP
                    } else {
                        PROTO_UDP
                    };
                    // Keep it from being a valid packet to a published port:
                    // either not to a local address or with a bad IHL.
                    if rng.below(2) == 0 {
                        pkt[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&ELSEWHERE.octets());
                    } else {
                        pkt[ETH_HLEN] = 0x40 | (rng.below(5) as u8);
                        pkt[ETH_HLEN + 16..ETH_HLEN + 20].copy_from_slice(&HOST.octets());
                    }
                }
            }
        }
        for prog in [PROG_EXTERNAL_INGRESS, PROG_BRIDGE_INGRESS] {
            if let Some(run) = dp.try_run(prog, &pkt) {
                assert_untouched(&format!("{prog}, garbage #{i} {pkt:02x?}"), &run, &pkt);
                ran += 1;
            }
        }
    }
    assert!(
        ran >= 2 * total * 9 / 10,
        "only {ran} of {} garbage runs were carried out",
        2 * total
    );
    assert_eq!(dp.counter("dnat"), 0, "counter dnat after garbage");
    assert_eq!(
        dp.counter("reverse_nat"),
        0,
        "counter reverse_nat after garbage"
    );
    assert!(
        dp.ct_entries().is_empty(),
        "garbage created conntrack entries"
    );
}

#[test]
fn ipv4_options_are_skipped_and_kept() {
    let Some(mut dp) = standard("ipv4_options_are_skipped_and_kept") else {
        return;
    };
    let nop_eol = [1u8, 1, 1, 0];
    // 40 bytes: NOPs, a router alert, and the end of the list.
    let mut long = vec![1u8; 32];
    long.extend_from_slice(&[0x94, 0x04, 0, 0]);
    long.extend_from_slice(&[0, 0, 0, 0]);

    let mut sport = 41_000;
    for opts in [&nop_eol[..], &long[..]] {
        let what = format!("IHL {}", (20 + opts.len()) / 4);
        sport += 1;
        // TCP.
        let syn = tcp_with(
            &Ip::new(CLIENT, HOST, PROTO_TCP).options(opts),
            sport,
            8080,
            TCP_SYN,
            b"",
        );
        let run = dp.ext(&syn);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "{what}: a TCP SYN with IP options to a published port must be DNATed"
        );
        let l4 = l4_off(&syn);
        assert_eq!(l4, ETH_HLEN + 20 + opts.len(), "test bug: L4 offset");
        assert_eq!(
            &run.out[ETH_HLEN + 20..l4],
            opts,
            "{what}: the IP options were modified"
        );
        assert_eq!(
            port(&run.out, 2),
            80,
            "{what}: the destination port at the L4 offset after the options"
        );
        assert_eq!(
            port(&run.out, 0),
            sport,
            "{what}: the source port at the L4 offset after the options"
        );
        let want = tcp_with(
            &Ip::new(CLIENT, CONTAINER, PROTO_TCP).options(opts),
            sport,
            80,
            TCP_SYN,
            b"",
        );
        assert_translated(&format!("{what}, DNATed TCP"), &run.out, &want);
        let fwd = dp
            .ct(&ct_key(ep(CLIENT, sport), ep(HOST, 8080), PROTO_TCP))
            .expect("no forward entry");
        assert_eq!(
            fwd.bytes,
            ip_total_len(&syn) as u64,
            "{what}: forward entry bytes include the options"
        );

        // The reply, with options too.
        let syn_ack = tcp_with(
            &Ip::new(CONTAINER, CLIENT, PROTO_TCP).options(opts),
            80,
            sport,
            TCP_SYN | TCP_ACK,
            b"",
        );
        let run = dp.br(&syn_ack);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "{what}: the reply with IP options must be reverse-NATed"
        );
        assert_eq!(
            &run.out[ETH_HLEN + 20..l4],
            opts,
            "{what}: the reply's IP options were modified"
        );
        let want = tcp_with(
            &Ip::new(HOST, CLIENT, PROTO_TCP).options(opts),
            8080,
            sport,
            TCP_SYN | TCP_ACK,
            b"",
        );
        assert_translated(&format!("{what}, reverse-NATed TCP"), &run.out, &want);

        // UDP.
        let dgram = udp_with(
            &Ip::new(CLIENT, HOST2, PROTO_UDP).options(opts),
            sport,
            5353,
            b"query",
        );
        let run = dp.ext(&dgram);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "{what}: UDP with IP options to a published port must be DNATed"
        );
        assert_eq!(
            &run.out[ETH_HLEN + 20..l4],
            opts,
            "{what}: the IP options were modified (UDP)"
        );
        assert_eq!(
            port(&run.out, 2),
            53,
            "{what}: the UDP destination port at the L4 offset after the options"
        );
        let want = udp_with(
            &Ip::new(CLIENT, DNS_CONTAINER, PROTO_UDP).options(opts),
            sport,
            53,
            b"query",
        );
        assert_translated(&format!("{what}, DNATed UDP"), &run.out, &want);
    }
}

#[test]
fn fragments_pass_unchanged() {
    let Some(mut dp) = standard("fragments_pass_unchanged") else {
        return;
    };
    let body = tcp_segment(42_000, 8080, TCP_SYN, 1, 0, &[0xab; 24]);
    // A later fragment whose payload happens to start like a header to 8080.
    let mut tail = vec![0xa4, 0x10, 0x1f, 0x90];
    tail.extend_from_slice(&[0xcd; 28]);
    let udp_body = udp_datagram(42_001, 5353, &[0x11; 64]);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "first TCP fragment (MF, offset 0)",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_TCP).frag(IP_MF), &body),
        ),
        (
            "middle TCP fragment (MF, offset 5)",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_TCP).frag(IP_MF | 5), &tail),
        ),
        (
            "last TCP fragment (offset 5)",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_TCP).frag(5), &tail),
        ),
        (
            "first UDP fragment (MF, offset 0)",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_UDP).frag(IP_MF), &udp_body),
        ),
        (
            "last UDP fragment (DF, offset 9)",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_UDP).frag(IP_DF | 9), &tail),
        ),
        (
            "fragment with the largest offset",
            ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_UDP).frag(0x1fff), &tail),
        ),
    ];
    for (n, (what, pkt)) in cases.iter().enumerate() {
        let before = dp.counter("fragment_passed");
        assert_untouched(&format!("pf_ext_in, {what}"), &dp.ext(pkt), pkt);
        assert_eq!(
            dp.counter("fragment_passed"),
            before + 1,
            "{what}: counter fragment_passed must count it (case {n})"
        );
    }
    assert!(
        dp.ct_entries().is_empty(),
        "fragments created conntrack entries: {:?}",
        dp.ct_entries()
    );
    assert_eq!(dp.counter("dnat"), 0, "counter dnat after fragments");
    assert_eq!(dp.counter("ct_new"), 0, "counter ct_new after fragments");

    // DF alone is not a fragment.
    let before = dp.counter("fragment_passed");
    let client = ep(CLIENT, 42_002);
    let syn = tcp_with(
        &Ip::new(CLIENT, HOST, PROTO_TCP).frag(IP_DF),
        client.port(),
        8080,
        TCP_SYN,
        b"",
    );
    let run = dp.ext(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN with DF (not a fragment) must be DNATed"
    );
    let want = tcp_with(
        &Ip::new(CLIENT, CONTAINER, PROTO_TCP).frag(IP_DF),
        client.port(),
        80,
        TCP_SYN,
        b"",
    );
    assert_translated("DNATed SYN with DF", &run.out, &want);
    assert_eq!(
        dp.counter("fragment_passed"),
        before,
        "DF alone must not count as a fragment"
    );

    // A fragment of the container's reply on a known flow is not rewritten either.
    let frag = ipv4_frame(
        &Ip::new(CONTAINER, CLIENT, PROTO_TCP).frag(IP_MF),
        &tcp_segment(80, client.port(), TCP_SYN | TCP_ACK, 1, 2, &[0; 16]),
    );
    assert_untouched(
        "pf_br_in, a reply fragment of a known flow",
        &dp.br(&frag),
        &frag,
    );
    assert_eq!(
        dp.counter("reverse_nat"),
        0,
        "counter reverse_nat after a reply fragment"
    );
}

#[test]
fn a_mapping_on_one_host_address_matches_only_that_address() {
    let Some(mut dp) = datapath("a_mapping_on_one_host_address_matches_only_that_address") else {
        return;
    };
    dp.local(HOST);
    dp.local(HOST2);
    dp.publish("10.0.1.1:8080=172.30.0.2:80");
    dp.publish("9090=172.30.0.9:90");

    let client = ep(CLIENT, 43_000);
    let syn = tcp(client, ep(HOST, 8080), TCP_SYN);
    let run = dp.ext(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN to the mapping's own address must be DNATed"
    );
    assert_translated(
        "DNATed SYN (host address mapping)",
        &run.out,
        &tcp(client, ep(CONTAINER, 80), TCP_SYN),
    );
    let fwd = dp
        .ct(&ct_key(client, ep(HOST, 8080), PROTO_TCP))
        .expect("no forward entry");
    assert_eq!(
        fwd.mapping_key(&ct_key(client, ep(HOST, 8080), PROTO_TCP))
            .addr_be,
        be(HOST),
        "forward entry: names the mapping's host address"
    );
    let rep = dp
        .ct(&ct_key(ep(CONTAINER, 80), client, PROTO_TCP))
        .expect("no reply entry");
    assert_eq!(
        rep.mapping_key(&ct_key(ep(CONTAINER, 80), client, PROTO_TCP))
            .addr_be,
        be(HOST),
        "reply entry: names the mapping's host address"
    );

    for (what, dst) in [
        ("another of the host's addresses", HOST2),
        ("an address that is not the host's", ELSEWHERE),
    ] {
        let pkt = tcp(ep(CLIENT, 43_001), ep(dst, 8080), TCP_SYN);
        assert_untouched(
            &format!("SYN to {what} on a port published on {HOST} only"),
            &dp.ext(&pkt),
            &pkt,
        );
    }

    // A wildcard mapping next to it still serves every local address.
    let client = ep(CLIENT, 43_002);
    let run = dp.ext(&tcp(client, ep(HOST2, 9090), TCP_SYN));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the wildcard mapping must serve {HOST2}"
    );
    assert_translated(
        "DNATed SYN (wildcard mapping)",
        &run.out,
        &tcp(client, ep(OTHER_CONTAINER, 90), TCP_SYN),
    );
    let fwd = dp
        .ct(&ct_key(client, ep(HOST2, 9090), PROTO_TCP))
        .expect("no forward entry");
    assert_eq!(
        fwd.mflags, CT_M_WILDCARD,
        "forward entry of a wildcard mapping: mflags"
    );
    assert_eq!(dp.counter("ct_new"), 2, "counter ct_new");
}

#[test]
fn established_flows_outlive_their_mapping() {
    let Some(mut dp) = standard("established_flows_outlive_their_mapping") else {
        return;
    };
    let client = ep(CLIENT, 44_000);
    let host = ep(HOST, 8080);
    let old = ep(CONTAINER, 80);
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the SYN must be DNATed"
    );

    dp.unpublish(WEB_SPEC);

    let ack = tcp(client, host, TCP_ACK);
    let run = dp.ext(&ack);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "an established flow must keep being DNATed after its mapping is deleted"
    );
    assert_translated(
        "ACK of a flow whose mapping is gone",
        &run.out,
        &tcp(client, old, TCP_ACK),
    );

    let new_syn = tcp(ep(CLIENT, 44_001), host, TCP_SYN);
    assert_untouched(
        "a new SYN to the deleted mapping",
        &dp.ext(&new_syn),
        &new_syn,
    );
    assert_eq!(
        dp.counter("ct_new"),
        1,
        "counter ct_new: the new SYN must not create a flow"
    );

    // The port published again, to another container: the old flow stays
    // where it started, new connections go to the new endpoint.
    dp.publish("8080=172.30.0.9:81");
    let data = tcp_with(
        &Ip::new(CLIENT, HOST, PROTO_TCP),
        client.port(),
        8080,
        TCP_PSH | TCP_ACK,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let run = dp.ext(&data);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the old flow's data must be DNATed"
    );
    let want = tcp_with(
        &Ip::new(CLIENT, CONTAINER, PROTO_TCP),
        client.port(),
        80,
        TCP_PSH | TCP_ACK,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert_translated(
        "the old flow's data after the port was republished",
        &run.out,
        &want,
    );

    let fin = tcp(client, host, TCP_FIN | TCP_ACK);
    let run = dp.ext(&fin);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the old flow's FIN must be DNATed"
    );
    assert_eq!(
        dst_of(&run.out),
        old,
        "the old flow's FIN must go to the old container"
    );

    let client2 = ep(CLIENT, 44_002);
    let run = dp.ext(&tcp(client2, host, TCP_SYN));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a new SYN must be DNATed to the new mapping"
    );
    assert_translated(
        "a new SYN after the port was republished",
        &run.out,
        &tcp(client2, ep(OTHER_CONTAINER, 81), TCP_SYN),
    );
    assert_eq!(dp.counter("ct_new"), 2, "counter ct_new");
}

// ---------------------------------------------------------------------------
// Hairpin: containers on the bridge reaching a published port through a host
// address. DNAT to the container, SNAT to the host address the client used.
// ---------------------------------------------------------------------------

/// Another container on the bridge (a hairpin client).
const NEIGHBOUR: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 7);

#[test]
fn hairpin_packets_from_the_bridge_are_dnated_and_snated() {
    let Some(mut dp) = standard("hairpin_packets_from_the_bridge_are_dnated_and_snated") else {
        return;
    };
    let client = ep(OTHER_CONTAINER, 41_000);
    let host = ep(HOST, 8080);
    let container = ep(CONTAINER, 80);
    let snat = ep(HOST, 41_000);

    let run = dp.br(&tcp(client, host, TCP_SYN));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a container's SYN to a published host port must be redirected"
    );
    assert_translated(
        "hairpin SYN: to the container, from the host address the client used, the client's port kept",
        &run.out,
        &tcp(snat, container, TCP_SYN),
    );
    assert_eq!(dp.counter("hairpin"), 1, "counter hairpin");
    assert_eq!(
        dp.counter("hairpin_port_moved"),
        0,
        "counter hairpin_port_moved"
    );

    let fwd = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("no hairpin forward entry");
    assert_eq!(
        (
            fwd.dir,
            fwd.nat_addr_be,
            fwd.nat_port_be,
            fwd.peer_addr_be,
            fwd.peer_port_be,
            fwd.ifindex
        ),
        (
            CT_DIR_FORWARD,
            be(CONTAINER),
            80u16.to_be(),
            be(HOST),
            41_000u16.to_be(),
            BRIDGE_IFINDEX
        ),
        "hairpin forward entry: container endpoint, and the source it is given"
    );
    let rep = dp
        .ct(&ct_key(container, snat, PROTO_TCP))
        .expect("no reply entry keyed container -> SNAT address");
    assert_eq!(
        (
            rep.dir,
            rep.nat_addr_be,
            rep.nat_port_be,
            rep.peer_addr_be,
            rep.peer_port_be,
            rep.ifindex
        ),
        (
            CT_DIR_REPLY,
            be(HOST),
            8080u16.to_be(),
            be(OTHER_CONTAINER),
            41_000u16.to_be(),
            TEST_RUN_IFINDEX
        ),
        "hairpin reply entry: host port for the source, the client for the destination"
    );
    assert_eq!(
        fwd.sibling_key(&ct_key(client, host, PROTO_TCP)),
        ct_key(container, snat, PROTO_TCP),
        "the forward entry's sibling is the reply entry"
    );
    assert_eq!(
        rep.sibling_key(&ct_key(container, snat, PROTO_TCP)),
        ct_key(client, host, PROTO_TCP),
        "the reply entry's sibling is the forward entry"
    );

    // The container answers the host address; the client gets it from the
    // host port it connected to.
    let run = dp.br(&tcp(container, snat, TCP_SYN | TCP_ACK));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the hairpin SYN-ACK must be redirected to the client"
    );
    assert_translated(
        "hairpin SYN-ACK",
        &run.out,
        &tcp(host, client, TCP_SYN | TCP_ACK),
    );

    let run = dp.br(&tcp(client, host, TCP_ACK));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the client's ACK follows the flow"
    );
    assert_translated("hairpin ACK", &run.out, &tcp(snat, container, TCP_ACK));
    assert_eq!(
        dp.counter("ct_new"),
        1,
        "the ACK must reuse the flow's entries"
    );

    // The hairpin tuple arriving from outside is not taken over.
    let spoof = tcp(client, host, TCP_ACK);
    assert_untouched(
        "a hairpin flow's tuple on an external interface",
        &dp.ext(&spoof),
        &spoof,
    );

    // A second container using the same source port: another port is found,
    // and each gets its own replies.
    let second = ep(NEIGHBOUR, 41_000);
    let run = dp.br(&tcp(second, host, TCP_SYN));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the second hairpin SYN");
    let moved = src_of(&run.out);
    assert_eq!(*moved.ip(), HOST, "the second flow's source address");
    assert!(
        moved.port() != 41_000 && moved.port() >= 1024,
        "the second flow must get another unprivileged port, got {moved}"
    );
    assert_translated(
        "second hairpin SYN",
        &run.out,
        &tcp(moved, container, TCP_SYN),
    );
    assert_eq!(
        dp.counter("hairpin_port_moved"),
        1,
        "counter hairpin_port_moved"
    );
    let run = dp.br(&tcp(container, moved, TCP_SYN | TCP_ACK));
    assert_translated(
        "the second flow's SYN-ACK",
        &run.out,
        &tcp(host, second, TCP_SYN | TCP_ACK),
    );
    let data = tcp_with(
        &Ip::new(CONTAINER, HOST, PROTO_TCP),
        80,
        41_000,
        TCP_PSH | TCP_ACK,
        b"first",
    );
    let run = dp.br(&data);
    let want = tcp_with(
        &Ip::new(HOST, OTHER_CONTAINER, PROTO_TCP),
        8080,
        41_000,
        TCP_PSH | TCP_ACK,
        b"first",
    );
    assert_translated(
        "the first flow's data, after the second flow started",
        &run.out,
        &want,
    );

    // A container reaching itself through the other host address.
    let own = ep(CONTAINER, 42_000);
    let run = dp.br(&tcp(own, ep(HOST2, 8080), TCP_SYN));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the self-hairpin SYN");
    assert_translated(
        "self-hairpin SYN",
        &run.out,
        &tcp(ep(HOST2, 42_000), container, TCP_SYN),
    );
    let run = dp.br(&tcp(container, ep(HOST2, 42_000), TCP_SYN | TCP_ACK));
    assert_translated(
        "self-hairpin SYN-ACK",
        &run.out,
        &tcp(ep(HOST2, 8080), own, TCP_SYN | TCP_ACK),
    );

    // UDP both ways, checksums verified.
    let dns = ep(DNS_CONTAINER, 53);
    let asker = ep(OTHER_CONTAINER, 5_000);
    let run = dp.br(&udp(asker, ep(HOST, 5353), b"query"));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin datagram");
    assert_translated(
        "hairpin UDP",
        &run.out,
        &udp(ep(HOST, 5_000), dns, b"query"),
    );
    let run = dp.br(&udp(dns, ep(HOST, 5_000), b"answer"));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin answer");
    assert_translated(
        "hairpin UDP answer",
        &run.out,
        &udp(ep(HOST, 5353), asker, b"answer"),
    );
    assert_eq!(dp.counter("hairpin"), 4, "counter hairpin");

    // Not hairpin: no mapping, not a host address, or a TCP flow picked up
    // mid-stream (its source port was chosen at its SYN).
    for (what, pkt) in [
        (
            "to an unpublished host port",
            tcp(ep(NEIGHBOUR, 43_000), ep(HOST, 8081), TCP_SYN),
        ),
        (
            "to a published port on an address that is not the host's",
            tcp(ep(NEIGHBOUR, 43_000), ep(ELSEWHERE, 8080), TCP_SYN),
        ),
        (
            "an ACK of no known flow",
            tcp(ep(NEIGHBOUR, 43_001), host, TCP_ACK),
        ),
        (
            "UDP to a TCP-only port",
            udp(ep(NEIGHBOUR, 43_000), host, b"x"),
        ),
    ] {
        assert_untouched(&format!("from the bridge, {what}"), &dp.br(&pkt), &pkt);
    }
    assert_eq!(dp.counter("ct_new"), 4, "counter ct_new");
}

/// The source port of a hairpin flow is never one a host socket answers to
/// (a listener on the port, or a host process connected to the container
/// from it). Runs in a namespace of its own, with its own sockets.
#[test]
fn hairpin_source_ports_avoid_host_sockets() {
    if datapath("hairpin_source_ports_avoid_host_sockets").is_none() {
        return;
    }
    let ns = common::Netns::new(format!("pft-{}-dp-hairpin", std::process::id()));
    common::in_netns(&ns.name, || {
        let mut dp = standard("hairpin_source_ports_avoid_host_sockets").expect("a datapath");
        let tcp_taken = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("a TCP listener");
        let udp_taken = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("a UDP socket");
        let tport = tcp_taken.local_addr().unwrap().port();
        let uport = udp_taken.local_addr().unwrap().port();

        let client = ep(OTHER_CONTAINER, tport);
        let run = dp.br(&tcp(client, ep(HOST, 8080), TCP_SYN));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin SYN");
        let src = src_of(&run.out);
        assert!(
            src.port() != tport && src.port() >= 1024,
            "a host socket listens on {tport}: the flow must take another port, got {src}"
        );
        assert_translated(
            "hairpin SYN, port moved",
            &run.out,
            &tcp(ep(HOST, src.port()), ep(CONTAINER, 80), TCP_SYN),
        );

        let asker = ep(OTHER_CONTAINER, uport);
        let run = dp.br(&udp(asker, ep(HOST, 5353), b"q"));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin datagram");
        let src = src_of(&run.out);
        assert!(
            src.port() != uport,
            "a host UDP socket has {uport}: the flow must take another port, got {src}"
        );
        assert_eq!(
            dp.counter("hairpin_port_moved"),
            2,
            "counter hairpin_port_moved"
        );

        // A port nobody holds is kept.
        drop(tcp_taken);
        let run = dp.br(&tcp(ep(NEIGHBOUR, tport), ep(HOST, 8080), TCP_SYN));
        assert_translated(
            "hairpin SYN, port free again",
            &run.out,
            &tcp(ep(HOST, tport), ep(CONTAINER, 80), TCP_SYN),
        );
    });
}
