//! DNAT: packets from outside toward published ports, and everything the
//! external program must leave alone.
use std::net::Ipv4Addr;

use portfwd_common::{
    CT_DIR_FORWARD, CT_DIR_REPLY, CT_F_SYN, CT_LIFETIME_TCP_SYN_NS, CT_LIFETIME_UDP_NS,
    CT_M_WILDCARD, PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS, PROTO_TCP, PROTO_UDP,
};

use crate::{harness::*, packet::*};

fn tcp_syn_to_a_published_port_is_dnated_with_both_conntrack_entries<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 40_000);
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
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
        be(F::CONTAINER),
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
        be(F::HOST),
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

fn udp_to_a_published_port_is_dnated_and_keeps_its_checksum_right<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let host = ep(F::HOST, 5353);
    let container = ep(F::DNS_CONTAINER, 53);
    let query =
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";

    // A datagram with a real checksum.
    let client = ep(F::CLIENT, 50_000);
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
            be(F::DNS_CONTAINER),
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
        (CT_DIR_REPLY, be(F::HOST), 5353u16.to_be(), TEST_RUN_IFINDEX),
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

    // A datagram without a checksum (0): for IPv4 "none", which must stay
    // none; IPv6 forbids it, and such a datagram is not translated (see
    // v6.rs).
    let client = ep(F::CLIENT, 50_001);
    let mut pkt = udp(client, host, query);
    set_l4_csum(&mut pkt, 0);
    let run = dp.ext(&pkt);
    let zero_translated = !F::HOST.is_ipv6();
    if zero_translated {
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
    } else {
        assert_untouched("IPv6 UDP with a zero checksum", &run, &pkt);
    }

    // A datagram whose checksum after the rewrite computes to zero must carry
    // 0xffff (zero would mean "no checksum"). Pick the last payload word so
    // that the rewritten datagram sums to 0xffff.
    let client = ep(F::CLIENT, 50_002);
    let mut payload = b"zero-sum".to_vec();
    payload.extend_from_slice(&[0, 0]);
    let n = payload.len();
    let mut after = ip_frame(
        &Ip::new(F::CLIENT, F::DNS_CONTAINER, PROTO_UDP),
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

    let flows = 2 + u64::from(zero_translated);
    assert_eq!(dp.counter("dnat"), flows, "counter dnat");
    assert_eq!(
        dp.counter("ct_new"),
        flows,
        "counter ct_new: one per client port"
    );
    assert_eq!(dp.counter("reverse_nat"), 1, "counter reverse_nat");
}

#[test]
fn packets_that_are_not_for_a_published_port_are_left_alone() {
    let Some(mut dp) = standard::<V4>("packets_that_are_not_for_a_published_port_are_left_alone")
    else {
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
    let drops = dp.drops();
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
    let Some(mut dp) = standard::<V4>("garbage_is_left_alone") else {
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
    let Some(mut dp) = standard::<V4>("ipv4_options_are_skipped_and_kept") else {
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

fn a_mapping_on_one_host_address_matches_only_that_address<F: Fam>(test: &str) {
    let Some(mut dp) = datapath::<F>(test) else {
        return;
    };
    dp.local(F::HOST);
    dp.local(F::HOST2);
    dp.publish(F::HOST_ONLY_SPEC);
    dp.publish(F::OTHER_SPEC);

    let client = ep(F::CLIENT, 43_000);
    let syn = tcp(client, ep(F::HOST, 8080), TCP_SYN);
    let run = dp.ext(&syn);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a SYN to the mapping's own address must be DNATed"
    );
    assert_translated(
        "DNATed SYN (host address mapping)",
        &run.out,
        &tcp(client, ep(F::CONTAINER, 80), TCP_SYN),
    );
    let fwd = dp
        .ct(&ct_key(client, ep(F::HOST, 8080), PROTO_TCP))
        .expect("no forward entry");
    assert_eq!(
        fwd.mapping_key(&ct_key(client, ep(F::HOST, 8080), PROTO_TCP))
            .addr_be,
        be(F::HOST),
        "forward entry: names the mapping's host address"
    );
    let rep = dp
        .ct(&ct_key(ep(F::CONTAINER, 80), client, PROTO_TCP))
        .expect("no reply entry");
    assert_eq!(
        rep.mapping_key(&ct_key(ep(F::CONTAINER, 80), client, PROTO_TCP))
            .addr_be,
        be(F::HOST),
        "reply entry: names the mapping's host address"
    );

    for (what, dst) in [
        ("another of the host's addresses", F::HOST2),
        ("an address that is not the host's", F::ELSEWHERE),
    ] {
        let pkt = tcp(ep(F::CLIENT, 43_001), ep(dst, 8080), TCP_SYN);
        assert_untouched(
            &format!("SYN to {what} on a port published on {} only", F::HOST),
            &dp.ext(&pkt),
            &pkt,
        );
    }

    // A wildcard mapping next to it still serves every local address.
    let client = ep(F::CLIENT, 43_002);
    let run = dp.ext(&tcp(client, ep(F::HOST2, 9090), TCP_SYN));
    assert_eq!(
        run.verdict,
        TC_ACT_REDIRECT,
        "the wildcard mapping must serve {}",
        F::HOST2
    );
    assert_translated(
        "DNATed SYN (wildcard mapping)",
        &run.out,
        &tcp(client, ep(F::OTHER_CONTAINER, 90), TCP_SYN),
    );
    let fwd = dp
        .ct(&ct_key(client, ep(F::HOST2, 9090), PROTO_TCP))
        .expect("no forward entry");
    assert_eq!(
        fwd.mflags, CT_M_WILDCARD,
        "forward entry of a wildcard mapping: mflags"
    );
    assert_eq!(dp.counter("ct_new"), 2, "counter ct_new");
}

fn established_flows_outlive_their_mapping<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 44_000);
    let host = ep(F::HOST, 8080);
    let old = ep(F::CONTAINER, 80);
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the SYN must be DNATed"
    );

    dp.unpublish(F::WEB_SPEC);

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

    let new_syn = tcp(ep(F::CLIENT, 44_001), host, TCP_SYN);
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
    dp.publish(F::MOVED_SPEC);
    let data = tcp_with(
        &Ip::new(F::CLIENT, F::HOST, PROTO_TCP),
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
        &Ip::new(F::CLIENT, F::CONTAINER, PROTO_TCP),
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

    let client2 = ep(F::CLIENT, 44_002);
    let run = dp.ext(&tcp(client2, host, TCP_SYN));
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "a new SYN must be DNATed to the new mapping"
    );
    assert_translated(
        "a new SYN after the port was republished",
        &run.out,
        &tcp(client2, ep(F::OTHER_CONTAINER, 81), TCP_SYN),
    );
    assert_eq!(dp.counter("ct_new"), 2, "counter ct_new");
}

crate::both!(
    tcp_syn_to_a_published_port_is_dnated_with_both_conntrack_entries,
    udp_to_a_published_port_is_dnated_and_keeps_its_checksum_right,
    a_mapping_on_one_host_address_matches_only_that_address,
    established_flows_outlive_their_mapping,
);
