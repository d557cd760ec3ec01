//! Path MTU: a packet too big for the device it is redirected to gets a
//! "fragmentation needed" (ICMPv6 "packet too big") back instead of
//! vanishing; an IPv4 one without DF may be cut instead, an IPv6 one never
//! is. Runs in a namespace of its own, with a veth device of MTU 1400 as the
//! small link.
use std::net::{IpAddr, SocketAddr};

use portfwd_common::PROTO_TCP;

use crate::{common, harness::*, packet::*};

const SMALL_MTU: u16 = 1400;

/// The namespace and the ifindex of its small device.
fn small_link(tag: &str) -> (common::Netns, u32) {
    let ns = common::Netns::new(format!("pft-{}-dp-{tag}", std::process::id()));
    let mtu = SMALL_MTU.to_string();
    ns.ip(&[
        "link", "add", "small", "mtu", &mtu, "type", "veth", "peer", "name", "smallp", "mtu", &mtu,
    ]);
    ns.ip(&["link", "set", "small", "up"]);
    ns.ip(&["link", "set", "smallp", "up"]);
    // Cutting a datagram asks the FIB for the pieces' next hop, and
    // bpf_fib_lookup answers only for a device that forwards (as kernel NAT
    // forwards only then). Set here, not inherited from the machine's own
    // setting, which a new namespace copies.
    ns.sysctl("net.ipv4.conf.small.forwarding", "1");
    let out = ns.ip(&["-o", "link", "show", "small"]);
    let ifindex = out
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {out:?}"));
    (ns, ifindex)
}

/// A TCP segment of `len` bytes of L3, DF set (IPv4).
fn big_segment(src: SocketAddr, dst: SocketAddr, flags: u8, len: usize) -> Vec<u8> {
    let l3_header = if src.is_ipv6() { 40 } else { 20 };
    let payload = vec![0x5a; len - l3_header - 20];
    tcp_with(
        &Ip::new(src.ip(), dst.ip(), PROTO_TCP).frag(if src.is_ipv6() { 0 } else { IP_DF }),
        src.port(),
        dst.port(),
        flags,
        &payload,
    )
}

/// `out` is the "fragmentation needed" (MTU `mtu`) from `from` that
/// answers `pkt`: back to its sender, quoting its first 68 bytes of L3,
/// every checksum right. IPv6: "packet too big", quoting as much as fits
/// the minimum MTU (1280 bytes in all: 1232 of the packet), hop limit 64.
fn assert_frag_needed(what: &str, run: &Run, pkt: &[u8], from: impl Into<IpAddr>, mtu: u16) {
    let from = from.into();
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "{what}: the error goes back out"
    );
    let out = &run.out;
    assert_eq!(&out[..6], &pkt[6..12], "{what}: to the sender's MAC");
    assert_eq!(
        &out[6..12],
        &pkt[..6],
        "{what}: from the MAC it was sent to"
    );
    let sender = src_of(pkt).ip();
    let want = if is_v6(pkt) {
        let want = icmp_error(
            from,
            sender,
            2,
            0,
            u32::from(mtu).to_be_bytes(),
            &l3(pkt)[..1232],
        );
        assert_eq!(want.len(), ETH_HLEN + 1280, "test bug: the error's size");
        want
    } else {
        let mut want = icmp_error(
            from,
            sender,
            3,
            4,
            [0, 0, (mtu >> 8) as u8, mtu as u8],
            &l3(pkt)[..68],
        );
        // The kernel's TOS for ICMP errors (internetwork control
        // precedence), and no IP identification.
        want[ETH_HLEN + 1] = 0xc0;
        want[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&[0, 0]);
        fix_ip_csum(&mut want);
        want
    };
    let mut got = out.clone();
    got[..12].copy_from_slice(&want[..12]);
    assert_eq!(
        got, want,
        "{what}: not the expected ICMP fragmentation needed / packet too big"
    );
    assert!(ip_csum_ok(out) && icmp_csum_ok(out), "{what}: checksums");
}

fn a_packet_too_big_for_the_bridge_gets_fragmentation_needed<F: Fam>(test: &str) {
    if datapath::<F>(test).is_none() {
        return;
    }
    let (ns, small) = small_link(&format!("mtu-fwd{}", F::NAME));
    let test = test.to_string();
    common::in_netns(&ns.name, move || {
        let mut dp = datapath::<F>(&test).expect("a datapath");
        dp.local(F::HOST);
        dp.publish_on(F::WEB_SPEC, small);
        let client = ep(F::CLIENT, 43_000);
        let host = ep(F::HOST, 8080);

        let fits = big_segment(client, host, TCP_SYN, SMALL_MTU as usize);
        assert_eq!(
            ip_total_len(&fits),
            SMALL_MTU as usize,
            "test bug: the size"
        );
        assert_eq!(
            dp.ext(&fits).verdict,
            TC_ACT_REDIRECT,
            "1400 bytes fit a 1400 MTU"
        );
        let big = big_segment(client, host, TCP_ACK, 1500);
        let run = dp.ext(&big);
        assert_frag_needed(
            "1500 bytes to a 1400 MTU bridge",
            &run,
            &big,
            F::HOST,
            SMALL_MTU,
        );
        assert_eq!(
            dp.counter("icmp_frag_needed_sent"),
            1,
            "counter icmp_frag_needed_sent"
        );
    });
}

fn a_reply_too_big_for_the_clients_link_gets_fragmentation_needed<F: Fam>(test: &str) {
    if datapath::<F>(test).is_none() {
        return;
    }
    let (ns, small) = small_link(&format!("mtu-rev{}", F::NAME));
    let test = test.to_string();
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<F>(&test).expect("a datapath");
        let client = ep(F::CLIENT, 43_100);
        let container = ep(F::CONTAINER, 80);
        // The client comes in on the small link.
        let run = dp.run_on(
            portfwd_common::PROG_EXTERNAL_INGRESS,
            &tcp(client, ep(F::HOST, 8080), TCP_SYN),
            small,
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the SYN");
        let big = big_segment(container, client, TCP_ACK, 1500);
        let run = dp.br(&big);
        assert_frag_needed(
            "a 1500-byte reply to a 1400 MTU link",
            &run,
            &big,
            F::HOST,
            SMALL_MTU,
        );

        let fits = big_segment(container, client, TCP_ACK, 1400);
        assert_eq!(
            dp.br(&fits).verdict,
            TC_ACT_REDIRECT,
            "a reply that fits goes"
        );
        assert_eq!(
            src_of(&dp.br(&fits).out).ip(),
            F::HOST,
            "and is reverse-NATed"
        );
    });
}

/// portfwd's own errors are rate-limited per CPU (a burst of 50, then 1 000
/// a second); the packets it cannot answer are dropped and counted.
#[test]
fn fragmentation_needed_is_rate_limited() {
    if datapath::<V4>("fragmentation_needed_is_rate_limited").is_none() {
        return;
    }
    let (ns, small) = small_link("mtu-rate");
    common::in_netns(&ns.name, move || {
        let mut dp = datapath::<V4>("fragmentation_needed_is_rate_limited").expect("a datapath");
        dp.local(HOST);
        dp.publish_on(WEB_SPEC, small);
        let host = ep(HOST, 8080);
        // One CPU, one bucket.
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and
        // sched_setaffinity only touch it and this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            assert_eq!(
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
                0,
                "pinning the test thread to CPU 0"
            );
        }
        let started = std::time::Instant::now();
        let tries = 300u64;
        for i in 0..tries {
            let big = big_segment(ep(CLIENT, 44_000 + i as u16), host, TCP_ACK, 1500);
            let v = dp.ext(&big).verdict;
            assert!(
                v == TC_ACT_REDIRECT || v == TC_ACT_SHOT,
                "try {i}: verdict {v}: an error or a drop"
            );
        }
        let sent = dp.counter("icmp_frag_needed_sent");
        let limited = dp.counter("icmp_rate_limited");
        assert_eq!(
            sent + limited,
            tries,
            "every try is an error sent or a drop counted"
        );
        // The burst, and one more per millisecond the loop took, give or
        // take the datapath's coarse clock (one tick, 10 ms at HZ=100).
        let most = portfwd_common::ICMP_RATE_BURST + started.elapsed().as_millis() as u64 + 10;
        assert!(
            (portfwd_common::ICMP_RATE_BURST..=most).contains(&sent),
            "{sent} errors sent for {tries} tries: want the burst of {} and at most {most}",
            portfwd_common::ICMP_RATE_BURST
        );
        assert_eq!(dp.counter("drop_too_big"), limited, "counter drop_too_big");
    });
}

/// Runs `f` over a datapath in a namespace whose small link leads to the
/// client (a route and a known neighbour), after a query from the client
/// over it to the published DNS port, so that a reply has a flow to follow.
fn after_a_query_over_the_small_link(
    tag: &str,
    test: &'static str,
    f: impl FnOnce(&mut Datapath, SocketAddr) + Send + 'static,
) {
    if datapath::<V4>(test).is_none() {
        return;
    }
    let (ns, small) = small_link(tag);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "small"]);
    ns.ip(&["route", "add", "default", "via", "10.9.0.2", "dev", "small"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.9.0.2",
        "lladdr",
        "02:00:00:00:09:02",
        "dev",
        "small",
    ]);
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<V4>(test).expect("a datapath");
        let client = ep(CLIENT, 43_200);
        let run = dp.run_on(
            portfwd_common::PROG_EXTERNAL_INGRESS,
            &udp(client, ep(HOST, 5353), b"query"),
            small,
        );
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the query");
        f(&mut dp, client);
    });
}

/// The container's UDP reply of `len` bytes of payload to `client`, no DF.
fn big_reply(client: SocketAddr, len: usize) -> Vec<u8> {
    let container = ep(DNS_CONTAINER, 53);
    udp_with(
        &Ip::new(container.ip(), client.ip(), portfwd_common::PROTO_UDP).id(0x4242),
        container.port(),
        client.port(),
        &vec![0x6b; len],
    )
}

/// `run` left the last piece of a cut: to the route's neighbour, from the
/// published address, the bytes of `l3` from `offset` on, MF if `more`.
fn assert_last_piece(run: &Run, l3: &[u8], offset: usize, more: bool) {
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "its last piece goes out");
    let out = &run.out;
    assert_eq!(&out[..6], &[2, 0, 0, 0, 9, 2], "to the route's neighbour");
    assert_eq!(src_ip(out), HOST, "reverse-NATed source");
    assert_eq!(
        ip_total_len(out),
        20 + l3.len() - offset,
        "the last piece's length"
    );
    let word = u16::from_be_bytes([out[ETH_HLEN + 6], out[ETH_HLEN + 7]]);
    let mf = if more { IP_MF } else { 0 };
    assert_eq!(
        word,
        mf | ((offset - 20) / 8) as u16,
        "offset {} (MF {more})",
        offset - 20
    );
    assert!(ip_csum_ok(out), "the piece's header checksum");
    assert_eq!(
        &out[ETH_HLEN + 20..],
        &l3[offset..],
        "the piece's bytes are the datagram's last ones"
    );
}

/// A container's reply that its kernel already cut into fragments (no DF)
/// and whose first fragment is too big for the client's link is cut again,
/// as the kernel's forwarding path would, not answered.
#[test]
fn a_replys_fragment_too_big_for_the_clients_link_is_cut_again() {
    const TEST: &str = "a_replys_fragment_too_big_for_the_clients_link_is_cut_again";
    after_a_query_over_the_small_link("mtu-cut", TEST, |dp, client| {
        // The container's kernel cut at 1500: a first fragment of 1480
        // bytes of payload.
        let first = &fragments(&big_reply(client, 3000), &[1480], 0x4242)[0];
        let run = dp.br(first);
        assert_eq!(
            dp.counter("icmp_frag_needed_sent"),
            0,
            "no error for a fragment without DF"
        );
        assert_eq!(dp.counter("fragmented"), 1, "the fragment was cut");
        // The pieces before it went out as copies; the last is what the
        // program leaves: the fragment's bytes after 1376 (the most that
        // fits 1400 in multiples of 8), MF kept (the datagram goes on).
        let mut rnat = l3(first).to_vec();
        rnat[12..16].copy_from_slice(&HOST.octets());
        assert_last_piece(&run, &rnat, 20 + 1376, true);
    });
}

/// A whole datagram without DF too big for the client's link (on a Docker
/// host, typically the container's fragments that bridge netfilter put back
/// together) is cut when its checksum verifies: into pieces of 1376 bytes,
/// the last one without MF.
#[test]
fn a_whole_reply_too_big_for_the_clients_link_is_cut() {
    const TEST: &str = "a_whole_reply_too_big_for_the_clients_link_is_cut";
    after_a_query_over_the_small_link("mtu-whole", TEST, |dp, client| {
        let whole = big_reply(client, 3000);
        let run = dp.br(&whole);
        assert_eq!(dp.counter("fragmented"), 1, "the datagram was cut");
        assert_eq!(dp.counter("icmp_frag_needed_sent"), 0, "no error");
        // 8 + 3000 bytes of UDP: 1376 + 1376 + 256, the last from the
        // payload (the program rewrote the source address and the UDP
        // checksum, both before it).
        let mut rnat = l3(&whole).to_vec();
        rnat[12..16].copy_from_slice(&HOST.octets());
        assert_last_piece(&run, &rnat, 20 + 2752, false);
    });
}

/// A whole datagram whose checksum does not verify may be one an offload is
/// still to fill in; cut, its pieces would keep it unfilled. It is answered
/// like a datagram with DF instead, and nothing is cut.
#[test]
fn a_whole_reply_with_a_bad_checksum_is_not_cut() {
    const TEST: &str = "a_whole_reply_with_a_bad_checksum_is_not_cut";
    after_a_query_over_the_small_link("mtu-badsum", TEST, |dp, client| {
        let mut whole = big_reply(client, 3000);
        let at = ETH_HLEN + 20 + 6;
        whole[at] ^= 0x55;
        let run = dp.br(&whole);
        assert_eq!(dp.counter("fragmented"), 0, "nothing was cut");
        assert_eq!(
            dp.counter("icmp_frag_needed_sent"),
            1,
            "fragmentation needed sent"
        );
        assert_frag_needed("the bad datagram", &run, &whole, HOST, SMALL_MTU);
    });
}

crate::both!(
    a_packet_too_big_for_the_bridge_gets_fragmentation_needed,
    a_reply_too_big_for_the_clients_link_gets_fragmentation_needed,
);

/// IPv6 routers never fragment: a container's reply too big for the
/// client's link gets "packet too big" even where IPv4 would cut it (a
/// fragment already, a datagram without DF), and nothing is cut.
#[test]
fn an_ipv6_reply_too_big_is_answered_never_cut() {
    const TEST: &str = "an_ipv6_reply_too_big_is_answered_never_cut";
    if datapath::<V6>(TEST).is_none() {
        return;
    }
    let (ns, small) = small_link("mtu-v6cut");
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<V6>(TEST).expect("a datapath");
        let client = ep(V6::CLIENT, 43_300);
        let run = dp.run_on(
            portfwd_common::PROG_EXTERNAL_INGRESS,
            &udp(client, ep(V6::HOST, 5353), b"query"),
            small,
        );
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "the query over the small link"
        );
        let whole = udp(ep(V6::DNS_CONTAINER, 53), client, &[0x6b; 3000]);
        let first = &fragments(&whole, &[1448], 0x4242)[0];
        for (what, pkt) in [("a whole datagram", &whole), ("a first fragment", first)] {
            let run = dp.br(pkt);
            assert_frag_needed(&format!("{what} too big"), &run, pkt, V6::HOST, SMALL_MTU);
        }
        assert_eq!(dp.counter("fragmented"), 0, "nothing is cut");
        assert_eq!(
            dp.counter("icmp_frag_needed_sent"),
            2,
            "counter icmp_frag_needed_sent"
        );
    });
}
