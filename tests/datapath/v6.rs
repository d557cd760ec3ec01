//! What only IPv6 has: extension headers walked (a bounded number of them)
//! to the TCP/UDP header, neighbour and router discovery and link-local
//! addresses left alone, a UDP checksum of zero never carried, fragment
//! headers, ICMPv6 errors about packets with extension headers, and "packet
//! too big" where IPv4 would cut.
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use portfwd_common::{
    PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{harness::*, packet::*};

/// A client's and a router's link-local addresses, one of the host's.
const LL_CLIENT: IpAddr = v6([0xfe80, 0, 0, 0, 0, 0, 0, 7]);
const LL_ROUTER: IpAddr = v6([0xfe80, 0, 0, 0, 0, 0, 0, 1]);
const LL_HOST: IpAddr = v6([0xfe80, 0, 0, 0, 0, 0, 0, 0x11]);
/// The end of the link-local prefix (fe80::/10).
const LL_LAST: IpAddr = v6([0xfebf, 0xffff, 0, 0, 0, 0, 0, 7]);
/// Just past it (site-local, deprecated, but not link-local).
const SITE_LOCAL: IpAddr = v6([0xfec0, 0, 0, 0, 0, 0, 0, 7]);
const ALL_NODES: IpAddr = v6([0xff02, 0, 0, 0, 0, 0, 0, 1]);
const ALL_ROUTERS: IpAddr = v6([0xff02, 0, 0, 0, 0, 0, 0, 2]);
/// The solicited-node multicast address of the host's V6::HOST.
const SOLICITED_HOST: IpAddr = v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 1]);

/// `pkt` is left alone by both programs.
fn assert_untouched_by_both(dp: &mut Datapath<V6>, what: &str, pkt: &[u8]) {
    assert_untouched(&format!("pf_ext_in, {what}"), &dp.ext(pkt), pkt);
    assert_untouched(&format!("pf_br_in, {what}"), &dp.br(pkt), pkt);
}

/// Nothing was translated, tracked or dropped.
fn assert_nothing_done(dp: &Datapath<V6>, what: &str) {
    for c in ["dnat", "reverse_nat", "ct_new", "hairpin"] {
        assert_eq!(dp.counter(c), 0, "{what}: counter {c}");
    }
    assert!(
        dp.ct_entries().is_empty(),
        "{what}: conntrack entries were created: {:?}",
        dp.ct_entries()
    );
    let drops = dp.drops();
    assert!(drops.is_empty(), "{what}: drops counted: {drops:?}");
}

/// Hop-by-hop, destination options, routing: the three extension headers
/// that may come before TCP/UDP, in the order RFC 8200 gives them.
fn three_headers(ip: Ip) -> Ip {
    ip.ext(EXT_HOP_BY_HOP, ext_options(1))
        .ext(EXT_DEST_OPTS, ext_options(3))
        .ext(EXT_ROUTING, ext_routing())
}

#[test]
fn extension_headers_before_tcp_and_udp_are_walked_and_kept() {
    let Some(mut dp) = standard::<V6>("extension_headers_before_tcp_and_udp_are_walked_and_kept")
    else {
        return;
    };
    let client = ep(V6::CLIENT, 46_000);
    let host = ep(V6::HOST, 8080);
    let container = ep(V6::CONTAINER, 80);
    let ext =
        |src: SocketAddr, dst: SocketAddr, proto| three_headers(Ip::new(src.ip(), dst.ip(), proto));

    let syn = tcp_with(&ext(client, host, PROTO_TCP), 46_000, 8080, TCP_SYN, b"");
    assert_eq!(
        l4_off(&syn),
        ETH_HLEN + IP6_HLEN + 8 + 24 + 8,
        "test bug: the TCP header's offset"
    );
    let run = dp.ext(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN behind hop-by-hop, destination options and routing headers must be DNATed"
    );
    let ext_bytes = ETH_HLEN + IP6_HLEN..l4_off(&syn);
    assert_eq!(
        &run.out[ext_bytes.clone()],
        &syn[ext_bytes.clone()],
        "the extension headers were modified"
    );
    assert_translated(
        "DNATed SYN behind extension headers",
        &run.out,
        &tcp_with(&ext(client, container, PROTO_TCP), 46_000, 80, TCP_SYN, b""),
    );
    let fwd = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("no forward entry for the SYN with extension headers");
    assert_eq!(
        fwd.bytes,
        ip_total_len(&syn) as u64,
        "forward entry: bytes (the whole IPv6 packet, extension headers included)"
    );

    // The container's answer, with extension headers of its own.
    let syn_ack = tcp_with(
        &ext(container, client, PROTO_TCP),
        80,
        46_000,
        TCP_SYN | TCP_ACK,
        b"",
    );
    let run = dp.br(&syn_ack);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the reply behind extension headers must be reverse-NATed"
    );
    assert_translated(
        "reverse-NATed SYN-ACK behind extension headers",
        &run.out,
        &tcp_with(
            &ext(host, client, PROTO_TCP),
            8080,
            46_000,
            TCP_SYN | TCP_ACK,
            b"",
        ),
    );

    // UDP, behind a long hop-by-hop header (2 KiB, the most its length
    // field says) and a destination options header.
    let uclient = ep(V6::CLIENT, 46_001);
    let long = |src: SocketAddr, dst: SocketAddr| {
        Ip::new(src.ip(), dst.ip(), PROTO_UDP)
            .ext(EXT_HOP_BY_HOP, ext_options(256))
            .ext(EXT_DEST_OPTS, ext_options(1))
    };
    let dgram = udp_with(&long(uclient, ep(V6::HOST, 5353)), 46_001, 5353, b"query");
    let run = dp.ext(&dgram);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "UDP behind 2 KiB of hop-by-hop options must be DNATed"
    );
    assert_translated(
        "DNATed UDP behind a long hop-by-hop header",
        &run.out,
        &udp_with(
            &long(uclient, ep(V6::DNS_CONTAINER, 53)),
            46_001,
            53,
            b"query",
        ),
    );
    assert_eq!(dp.counter("dnat"), 2, "counter dnat");
    assert_eq!(dp.counter("reverse_nat"), 1, "counter reverse_nat");
}

/// The walk stops after four extension headers: a fifth, of any kind,
/// makes the packet not portfwd's, and it goes to the host as it came.
#[test]
fn an_extension_chain_past_the_walks_bound_is_left_alone() {
    let Some(mut dp) = standard::<V6>("an_extension_chain_past_the_walks_bound_is_left_alone")
    else {
        return;
    };
    let chain = |ip: Ip, n: usize, last: u8| {
        let mut ip = ip.ext(EXT_HOP_BY_HOP, ext_options(1));
        for _ in 1..n - 1 {
            ip = ip.ext(EXT_DEST_OPTS, ext_options(1));
        }
        match last {
            EXT_FRAGMENT => ip.ext(EXT_FRAGMENT, ext_fragment(0, false, 7)),
            EXT_ROUTING => ip.ext(EXT_ROUTING, ext_routing()),
            _ => ip.ext(last, ext_options(1)),
        }
    };
    let ip = || Ip::new(V6::CLIENT, V6::HOST, PROTO_TCP);

    // Four: the most walked.
    let four = tcp_with(&chain(ip(), 4, EXT_DEST_OPTS), 46_100, 8080, TCP_SYN, b"");
    let run = dp.ext(&four);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN behind four extension headers (the bound) must be DNATed"
    );
    assert_translated(
        "DNATed SYN behind four extension headers",
        &run.out,
        &tcp_with(
            &chain(
                Ip::new(V6::CLIENT, V6::CONTAINER, PROTO_TCP),
                4,
                EXT_DEST_OPTS,
            ),
            46_100,
            80,
            TCP_SYN,
            b"",
        ),
    );
    assert_eq!(
        dst_of(&run.out),
        ep(V6::CONTAINER, 80),
        "after four headers"
    );

    for (what, last) in [
        ("destination options", EXT_DEST_OPTS),
        ("routing", EXT_ROUTING),
        ("an atomic fragment header", EXT_FRAGMENT),
    ] {
        for n in [5, 8] {
            let pkt = tcp_with(&chain(ip(), n, last), 46_101, 8080, TCP_SYN, b"");
            assert_untouched_by_both(
                &mut dp,
                &format!("a SYN to a published port behind {n} extension headers, the last {what}"),
                &pkt,
            );
            let pkt = udp_with(
                &chain(Ip::new(V6::CLIENT, V6::HOST, PROTO_UDP), n, last),
                46_101,
                5353,
                b"query",
            );
            assert_untouched_by_both(
                &mut dp,
                &format!("UDP to a published port behind {n} extension headers, the last {what}"),
                &pkt,
            );
        }
    }
    assert_eq!(dp.counter("dnat"), 1, "only the four-header SYN was DNATed");
    assert_eq!(dp.counter("ct_new"), 1, "counter ct_new");
}

/// Next headers that are not walked (ESP, AH, no next header, mobility),
/// truncated and malformed IPv6: left alone.
#[test]
fn ipv6_that_is_not_for_a_published_port_is_left_alone() {
    let Some(mut dp) = standard::<V6>("ipv6_that_is_not_for_a_published_port_is_left_alone") else {
        return;
    };
    let client = ep(V6::CLIENT, 46_200);
    let host = ep(V6::HOST, 8080);
    let syn = tcp(client, host, TCP_SYN);
    let l4 = l4_off(&syn);
    let with_ext = tcp_with(
        &three_headers(Ip::new(V6::CLIENT, V6::HOST, PROTO_TCP)),
        46_200,
        8080,
        TCP_SYN,
        b"",
    );
    let dgram = udp(ep(V6::CLIENT, 46_200), ep(V6::HOST, 5353), b"query");
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        (
            "TCP SYN to an unpublished port".into(),
            tcp(client, ep(V6::HOST, 8081), TCP_SYN),
        ),
        (
            "UDP to a port published for TCP only".into(),
            udp(client, ep(V6::HOST, 8080), b"x"),
        ),
        (
            "TCP SYN to a wildcard port on an address that is not the host's".into(),
            tcp(client, ep(V6::ELSEWHERE, 8080), TCP_SYN),
        ),
        (
            "TCP SYN to a published port on ::1 from the wire".into(),
            tcp(client, ep(Ipv6Addr::LOCALHOST, 8080), TCP_SYN),
        ),
        (
            "TCP from the published port (source, not destination)".into(),
            tcp(ep(V6::CLIENT, 8080), ep(V6::HOST, 46_200), TCP_SYN),
        ),
        (
            "TCP SYN to a published port on a multicast address".into(),
            tcp(client, ep(ALL_NODES, 8080), TCP_SYN),
        ),
    ];
    for (name, next) in [
        ("ESP", 50u8),
        ("AH", 51),
        ("no next header", 59),
        ("mobility", 135),
    ] {
        // The TCP header behind it, where a parser that skipped it by
        // mistake would find the published port.
        let mut p = with_ext.clone();
        // The routing header, last before TCP.
        let rt = ETH_HLEN + IP6_HLEN + 8 + 24;
        p[rt] = next;
        cases.push((
            format!("{name} before a TCP header to the published port"),
            p,
        ));
    }
    cases.push((
        "IPv6 header only".into(),
        syn[..ETH_HLEN + IP6_HLEN].to_vec(),
    ));
    cases.push((
        "TCP header cut after the ports".into(),
        syn[..l4 + 4].to_vec(),
    ));
    cases.push((
        "TCP header cut before the checksum".into(),
        syn[..l4 + 16].to_vec(),
    ));
    cases.push((
        "UDP header cut inside the checksum".into(),
        dgram[..l4_off(&dgram) + 7].to_vec(),
    ));
    let ext_l4 = l4_off(&with_ext);
    cases.push((
        "extension headers cut inside the hop-by-hop header".into(),
        with_ext[..ETH_HLEN + IP6_HLEN + 4].to_vec(),
    ));
    cases.push((
        "extension headers cut inside the destination options".into(),
        with_ext[..ETH_HLEN + IP6_HLEN + 8 + 12].to_vec(),
    ));
    cases.push((
        "extension headers whole, TCP cut before the checksum".into(),
        with_ext[..ext_l4 + 16].to_vec(),
    ));
    let mut past = with_ext.clone();
    past[ETH_HLEN + IP6_HLEN + 8 + 1] = 200; // destination options of 1608 bytes
    cases.push((
        "a destination options header longer than the packet".into(),
        past,
    ));
    for (name, version) in [("4", 0x40u8), ("0", 0x00), ("15", 0xf0)] {
        let mut p = syn.clone();
        p[ETH_HLEN] = version | (p[ETH_HLEN] & 0x0f);
        cases.push((format!("IP version {name} in an IPv6 frame"), p));
    }

    for (what, pkt) in &cases {
        assert_untouched_by_both(&mut dp, what, pkt);
    }
    assert_nothing_done(&dp, "IPv6 not for a published port");
    assert_eq!(
        dp.ext(&syn).verdict,
        TC_ACT_REDIRECT,
        "test bug: the reference SYN is not DNATed"
    );
}

/// Neighbour and router discovery (and the rest of ICMPv6 that is not an
/// error) are the host's: never touched, whoever sends them.
#[test]
fn neighbour_and_router_discovery_are_never_touched() {
    let Some(mut dp) = standard::<V6>("neighbour_and_router_discovery_are_never_touched") else {
        return;
    };
    // A flow, so that a message quoting it would have something to match.
    let client = ep(V6::CLIENT, 46_300);
    let syn_ack = {
        assert_eq!(
            dp.ext(&tcp(client, ep(V6::HOST, 8080), TCP_SYN)).verdict,
            TC_ACT_REDIRECT,
            "the SYN"
        );
        let run = dp.br(&tcp(ep(V6::CONTAINER, 80), client, TCP_SYN | TCP_ACK));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the SYN-ACK");
        run.out
    };
    let before = dp.ct_entries().len();
    let octets = |ip: IpAddr| match ip {
        IpAddr::V6(a) => a.octets().to_vec(),
        IpAddr::V4(_) => unreachable!(),
    };
    let mac_option = |ty: u8| vec![ty, 1, 0x02, 0, 0, 0, 0, 0x07];
    // Neighbour discovery goes with hop limit 255 (RFC 4861).
    let nd = |src: IpAddr, dst: IpAddr, ty: u8, rest: [u8; 4], body: Vec<u8>| {
        let mut p = icmp_error(src, dst, ty, 0, rest, &body);
        p[ETH_HLEN + 7] = 255;
        p
    };
    let target = octets(V6::HOST);
    let ns = |src: IpAddr, dst: IpAddr| {
        let mut b = target.clone();
        b.extend(mac_option(1));
        nd(src, dst, 135, [0; 4], b)
    };
    let mut na_body = target.clone();
    na_body.extend(mac_option(2));
    let mut ra_body = vec![0u8; 8]; // reachable time, retransmission timer
    ra_body.extend(mac_option(1));
    ra_body.extend_from_slice(&[
        3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
    ]);
    ra_body.extend(octets(v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0])));
    let mut redirect_body = octets(LL_ROUTER);
    redirect_body.extend(octets(V6::CLIENT));
    // The redirected header option: the start of the packet redirected.
    let quoted = &l3(&syn_ack)[..48];
    redirect_body.extend_from_slice(&[4, (quoted.len() / 8 + 1) as u8, 0, 0, 0, 0, 0, 0]);
    redirect_body.extend_from_slice(quoted);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "neighbour solicitation for the host's address (DAD, from ::)",
            ns(IpAddr::V6(Ipv6Addr::UNSPECIFIED), SOLICITED_HOST),
        ),
        (
            "neighbour solicitation from a link-local address",
            ns(LL_CLIENT, SOLICITED_HOST),
        ),
        (
            "neighbour solicitation, unicast, from a global address",
            ns(V6::CLIENT, V6::HOST),
        ),
        (
            "neighbour advertisement to all nodes",
            nd(LL_CLIENT, ALL_NODES, 136, [0x20, 0, 0, 0], na_body.clone()),
        ),
        (
            "neighbour advertisement, unicast, solicited",
            nd(V6::CLIENT, V6::HOST, 136, [0x60, 0, 0, 0], na_body),
        ),
        (
            "router solicitation",
            nd(LL_CLIENT, ALL_ROUTERS, 133, [0; 4], mac_option(1)),
        ),
        (
            "router advertisement",
            nd(LL_ROUTER, ALL_NODES, 134, [64, 0, 0x07, 0x08], ra_body),
        ),
        (
            "redirect quoting a flow's packet",
            nd(LL_ROUTER, V6::HOST, 137, [0; 4], redirect_body),
        ),
        (
            "echo request to the host",
            icmp_error(V6::CLIENT, V6::HOST, 128, 0, [0x12, 0x34, 0, 1], b"ping"),
        ),
        (
            "echo reply from a container",
            icmp_error(
                V6::CONTAINER,
                V6::CLIENT,
                129,
                0,
                [0x12, 0x34, 0, 1],
                b"pong",
            ),
        ),
        (
            "multicast listener report",
            icmp_error(
                LL_CLIENT,
                v6([0xff02, 0, 0, 0, 0, 0, 0, 0x16]),
                143,
                0,
                [0; 4],
                &[],
            ),
        ),
    ];
    for (what, pkt) in &cases {
        assert_eq!(ip_proto(pkt), PROTO_ICMPV6, "test bug: {what}");
        assert!(icmp_csum_ok(pkt), "test bug: {what}: checksum");
        assert_untouched_by_both(&mut dp, what, pkt);
    }
    assert_eq!(dp.ct_entries().len(), before, "no conntrack entries made");
    assert_eq!(
        dp.counter("icmp_to_container"),
        0,
        "counter icmp_to_container"
    );
    assert_eq!(dp.counter("icmp_to_client"), 0, "counter icmp_to_client");
}

/// Link-local addresses (fe80::/10) are the link's: a packet from or to
/// one is never translated, not even toward a published port on a host
/// address, nor an ICMPv6 error a router sends from one (forwarding it to
/// the bridge would carry a link-local source off its link, which RFC 4291
/// forbids).
#[test]
fn packets_from_or_to_link_local_addresses_are_never_touched() {
    let Some(mut dp) = standard::<V6>("packets_from_or_to_link_local_addresses_are_never_touched")
    else {
        return;
    };
    // Even were a link-local address in pf_local (userspace never puts it
    // there), it is not translated.
    dp.local(LL_HOST);
    // A flow from a global client, for the error below.
    let client = ep(V6::CLIENT, 46_400);
    assert_eq!(
        dp.ext(&tcp(client, ep(V6::HOST, 8080), TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the global client's SYN"
    );
    let run = dp.br(&tcp(ep(V6::CONTAINER, 80), client, TCP_SYN | TCP_ACK));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the SYN-ACK");
    let sent = run.out;
    let before = dp.ct_entries().len();

    let (tb0, tb1, tb2) = V6::too_big(1400);
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            PROG_EXTERNAL_INGRESS,
            "TCP SYN from a link-local client to a published port on a host address",
            tcp(ep(LL_CLIENT, 46_401), ep(V6::HOST, 8080), TCP_SYN),
        ),
        (
            PROG_EXTERNAL_INGRESS,
            "TCP SYN from the end of fe80::/10 to a published port",
            tcp(ep(LL_LAST, 46_401), ep(V6::HOST, 8080), TCP_SYN),
        ),
        (
            PROG_EXTERNAL_INGRESS,
            "UDP from a link-local client to a published port",
            udp(ep(LL_CLIENT, 46_401), ep(V6::HOST2, 5353), b"query"),
        ),
        (
            PROG_EXTERNAL_INGRESS,
            "TCP SYN to a published port on a link-local host address",
            tcp(ep(LL_CLIENT, 46_402), ep(LL_HOST, 8080), TCP_SYN),
        ),
        (
            PROG_EXTERNAL_INGRESS,
            "TCP SYN from a global client to a link-local host address",
            tcp(ep(V6::CLIENT, 46_402), ep(LL_HOST, 8080), TCP_SYN),
        ),
        (
            PROG_EXTERNAL_INGRESS,
            "packet too big from a link-local router about a flow's reply",
            icmp_error(LL_ROUTER, V6::HOST, tb0, tb1, tb2, l3(&sent)),
        ),
        (
            PROG_BRIDGE_INGRESS,
            "a container's SYN from its link-local address to a published host port",
            tcp(ep(LL_CLIENT, 46_403), ep(V6::HOST, 8080), TCP_SYN),
        ),
        (
            PROG_BRIDGE_INGRESS,
            "a container's UDP from its link-local address to a published host port",
            udp(ep(LL_CLIENT, 46_403), ep(V6::HOST, 5353), b"query"),
        ),
    ];
    for (prog, what, pkt) in &cases {
        assert_untouched(&format!("{prog}, {what}"), &dp.run(prog, pkt), pkt);
    }
    assert_eq!(dp.ct_entries().len(), before, "no conntrack entries made");
    assert_eq!(dp.counter("ct_new"), 1, "only the global client's flow");
    assert_eq!(
        dp.counter("icmp_to_container"),
        0,
        "counter icmp_to_container"
    );

    // Just outside fe80::/10 is not link-local: translated as any address.
    let run = dp.ext(&tcp(ep(SITE_LOCAL, 46_404), ep(V6::HOST, 8080), TCP_SYN));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "fec0::/10 is not link-local: a SYN from it is DNATed"
    );
}

/// IPv6 forbids a UDP checksum of zero (RFC 8200, 8.1): a datagram that
/// carries one is not translated (the kernel discards it as it would any
/// such datagram), and a translated datagram never leaves with one (a
/// computed zero goes as 0xffff, as the generic UDP test checks).
#[test]
fn udp_with_a_zero_checksum_is_not_translated() {
    let Some(mut dp) = standard::<V6>("udp_with_a_zero_checksum_is_not_translated") else {
        return;
    };
    let client = ep(V6::CLIENT, 46_500);
    let mut pkt = udp(client, ep(V6::HOST, 5353), b"query");
    set_l4_csum(&mut pkt, 0);
    assert_untouched(
        "UDP with a zero checksum to a published port",
        &dp.ext(&pkt),
        &pkt,
    );
    assert!(
        dp.ct(&ct_key(client, ep(V6::HOST, 5353), PROTO_UDP))
            .is_none(),
        "no flow for it"
    );

    // A flow, then its reply with a zero checksum.
    let good = udp(client, ep(V6::HOST, 5353), b"query");
    assert_eq!(dp.ext(&good).verdict, TC_ACT_REDIRECT, "the query");
    let mut reply = udp(ep(V6::DNS_CONTAINER, 53), client, b"answer");
    set_l4_csum(&mut reply, 0);
    assert_untouched("a reply with a zero UDP checksum", &dp.br(&reply), &reply);
    assert_eq!(dp.counter("reverse_nat"), 0, "counter reverse_nat");
}

/// An ICMPv6 error about a reply that went out with an extension header
/// finds the quoted UDP header behind it and is translated like any other.
#[test]
fn an_error_quoting_extension_headers_is_translated() {
    let Some(mut dp) = standard::<V6>("an_error_quoting_extension_headers_is_translated") else {
        return;
    };
    let client = ep(V6::CLIENT, 46_600);
    let dns = ep(V6::DNS_CONTAINER, 53);
    let host = ep(V6::HOST, 5353);
    assert_eq!(
        dp.ext(&udp(client, host, b"query")).verdict,
        TC_ACT_REDIRECT,
        "the query"
    );
    let with_opts = |src: SocketAddr, dst: SocketAddr| {
        udp_with(
            &Ip::new(src.ip(), dst.ip(), PROTO_UDP).ext(EXT_DEST_OPTS, ext_options(2)),
            src.port(),
            dst.port(),
            b"answer",
        )
    };
    let orig = with_opts(dns, client);
    let run = dp.br(&orig);
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the answer");
    assert_translated(
        "the answer behind options",
        &run.out,
        &with_opts(host, client),
    );

    let (ty, code) = V6::PORT_UNREACH;
    let err = icmp_error(V6::CLIENT, V6::HOST, ty, code, [0; 4], l3(&run.out));
    let run = dp.ext(&err);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "port unreachable quoting options and UDP goes to the container"
    );
    let want = icmp_error(V6::CLIENT, V6::DNS_CONTAINER, ty, code, [0; 4], l3(&orig));
    assert_icmp_translated("an error quoting options", &run.out, &want, true);
    assert_eq!(
        dp.counter("icmp_to_container"),
        1,
        "counter icmp_to_container"
    );
}

/// Fragment headers as the walk sees them: an atomic fragment (offset 0,
/// no M) is a whole packet; a fragment header behind hop-by-hop options
/// still makes a fragment; an early fragment too long to keep goes on.
#[test]
fn fragment_headers_are_handled_where_they_are() {
    let Some(mut dp) = standard::<V6>("fragment_headers_are_handled_where_they_are") else {
        return;
    };
    // An atomic fragment: translated whole, its fragment header kept.
    let client = ep(V6::CLIENT, 46_700);
    let atomic = |dst: SocketAddr| {
        udp_with(
            &Ip::new(V6::CLIENT, dst.ip(), PROTO_UDP).ext(EXT_FRAGMENT, ext_fragment(0, false, 9)),
            client.port(),
            dst.port(),
            b"atomic",
        )
    };
    let run = dp.ext(&atomic(ep(V6::HOST, 5353)));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "an atomic fragment is DNATed");
    assert_translated(
        "DNATed atomic fragment",
        &run.out,
        &atomic(ep(V6::DNS_CONTAINER, 53)),
    );
    assert_eq!(
        dp.counter("fragment_forwarded"),
        0,
        "an atomic fragment is no fragment"
    );

    // A datagram in two fragments, each behind a hop-by-hop header before
    // its fragment header.
    let uclient = ep(V6::CLIENT, 46_701);
    let payload: Vec<u8> = (0..2000).map(|i| (i * 13) as u8).collect();
    let split = |dst: SocketAddr| {
        let whole = udp(uclient, dst, &payload);
        let mut frags = fragments(&whole, &[1448], 0x0badf00d);
        for f in &mut frags {
            // Insert hop-by-hop before the fragment header.
            let hbh = {
                let mut h = ext_options(1);
                h[0] = EXT_FRAGMENT;
                h
            };
            let at = ETH_HLEN + IP6_HLEN;
            f.splice(at..at, hbh);
            f[ETH_HLEN + 6] = EXT_HOP_BY_HOP;
            let len = u16::from_be_bytes([f[ETH_HLEN + 4], f[ETH_HLEN + 5]]) + 8;
            f[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&len.to_be_bytes());
        }
        frags
    };
    let sent = split(ep(V6::HOST, 5353));
    // The rewritten datagram's fragments: the checksum is over the whole
    // datagram, computed here, and sits in the first fragment.
    let want = split(ep(V6::DNS_CONTAINER, 53));
    for (i, (f, w)) in sent.iter().zip(&want).enumerate() {
        let run = dp.ext(f);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "fragment {i} behind hop-by-hop goes to the bridge"
        );
        assert_eq!(run.out, *w, "fragment {i}: not the rewritten datagram's");
    }
    assert_eq!(
        dp.counter("fragment_forwarded"),
        2,
        "counter fragment_forwarded"
    );

    // An early fragment longer than a queue slot keeps (1520 bytes: more
    // than any fragment of a 1500-byte link) is passed on, not kept.
    let whole = udp(ep(V6::CLIENT, 46_702), ep(V6::HOST, 5353), &[7u8; 3000]);
    let frags = fragments(&whole, &[1480], 0x0000_5eed);
    assert!(
        ip_total_len(&frags[1]) > portfwd_common::FRAG_QUEUE_BYTES,
        "test bug: the fragment must be longer than a slot"
    );
    assert_untouched(
        "an early fragment too long to keep",
        &dp.ext(&frags[1]),
        &frags[1],
    );
    assert_eq!(dp.counter("fragment_queued"), 0, "counter fragment_queued");
}
