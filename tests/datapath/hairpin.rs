//! Hairpin: containers reaching a published port through a host address.
use portfwd_common::{CT_DIR_FORWARD, CT_DIR_REPLY, PROTO_TCP};

use crate::{common, harness::*, packet::*};

fn hairpin_packets_from_the_bridge_are_dnated_and_snated<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::OTHER_CONTAINER, 41_000);
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    let snat = ep(F::HOST, 41_000);

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
            be(F::CONTAINER),
            80u16.to_be(),
            be(F::HOST),
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
            be(F::HOST),
            8080u16.to_be(),
            be(F::OTHER_CONTAINER),
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
    let second = ep(F::NEIGHBOUR, 41_000);
    let run = dp.br(&tcp(second, host, TCP_SYN));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the second hairpin SYN");
    let moved = src_of(&run.out);
    assert_eq!(moved.ip(), F::HOST, "the second flow's source address");
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
        &Ip::new(F::CONTAINER, F::HOST, PROTO_TCP),
        80,
        41_000,
        TCP_PSH | TCP_ACK,
        b"first",
    );
    let run = dp.br(&data);
    let want = tcp_with(
        &Ip::new(F::HOST, F::OTHER_CONTAINER, PROTO_TCP),
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
    let own = ep(F::CONTAINER, 42_000);
    let run = dp.br(&tcp(own, ep(F::HOST2, 8080), TCP_SYN));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the self-hairpin SYN");
    assert_translated(
        "self-hairpin SYN",
        &run.out,
        &tcp(ep(F::HOST2, 42_000), container, TCP_SYN),
    );
    let run = dp.br(&tcp(container, ep(F::HOST2, 42_000), TCP_SYN | TCP_ACK));
    assert_translated(
        "self-hairpin SYN-ACK",
        &run.out,
        &tcp(ep(F::HOST2, 8080), own, TCP_SYN | TCP_ACK),
    );

    // UDP both ways, checksums verified.
    let dns = ep(F::DNS_CONTAINER, 53);
    let asker = ep(F::OTHER_CONTAINER, 5_000);
    let run = dp.br(&udp(asker, ep(F::HOST, 5353), b"query"));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin datagram");
    assert_translated(
        "hairpin UDP",
        &run.out,
        &udp(ep(F::HOST, 5_000), dns, b"query"),
    );
    let run = dp.br(&udp(dns, ep(F::HOST, 5_000), b"answer"));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin answer");
    assert_translated(
        "hairpin UDP answer",
        &run.out,
        &udp(ep(F::HOST, 5353), asker, b"answer"),
    );
    assert_eq!(dp.counter("hairpin"), 4, "counter hairpin");

    // Not hairpin: no mapping, not a host address, or a TCP flow picked up
    // mid-stream (its source port was chosen at its SYN).
    for (what, pkt) in [
        (
            "to an unpublished host port",
            tcp(ep(F::NEIGHBOUR, 43_000), ep(F::HOST, 8081), TCP_SYN),
        ),
        (
            "to a published port on an address that is not the host's",
            tcp(ep(F::NEIGHBOUR, 43_000), ep(F::ELSEWHERE, 8080), TCP_SYN),
        ),
        (
            "an ACK of no known flow",
            tcp(ep(F::NEIGHBOUR, 43_001), host, TCP_ACK),
        ),
        (
            "UDP to a TCP-only port",
            udp(ep(F::NEIGHBOUR, 43_000), host, b"x"),
        ),
    ] {
        assert_untouched(&format!("from the bridge, {what}"), &dp.br(&pkt), &pkt);
    }
    assert_eq!(dp.counter("ct_new"), 4, "counter ct_new");
}

/// The source port of a hairpin flow is never one a host socket answers to
/// (a listener on the port, or a host process connected to the container
/// from it). Runs in a namespace of its own, with its own sockets.
fn hairpin_source_ports_avoid_host_sockets<F: Fam>(test: &str) {
    if datapath::<F>(test).is_none() {
        return;
    }
    let ns = common::Netns::new(format!("pft-{}-dp-hairpin{}", std::process::id(), F::NAME));
    let test = test.to_string();
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<F>(&test).expect("a datapath");
        let any = std::net::SocketAddr::new(F::FAMILY.unspecified(), 0);
        let tcp_taken = std::net::TcpListener::bind(any).expect("a TCP listener");
        let udp_taken = std::net::UdpSocket::bind(any).expect("a UDP socket");
        let tport = tcp_taken.local_addr().unwrap().port();
        let uport = udp_taken.local_addr().unwrap().port();

        let client = ep(F::OTHER_CONTAINER, tport);
        let run = dp.br(&tcp(client, ep(F::HOST, 8080), TCP_SYN));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "the hairpin SYN");
        let src = src_of(&run.out);
        assert!(
            src.port() != tport && src.port() >= 1024,
            "a host socket listens on {tport}: the flow must take another port, got {src}"
        );
        assert_translated(
            "hairpin SYN, port moved",
            &run.out,
            &tcp(ep(F::HOST, src.port()), ep(F::CONTAINER, 80), TCP_SYN),
        );

        let asker = ep(F::OTHER_CONTAINER, uport);
        let run = dp.br(&udp(asker, ep(F::HOST, 5353), b"q"));
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
        let run = dp.br(&tcp(ep(F::NEIGHBOUR, tport), ep(F::HOST, 8080), TCP_SYN));
        assert_translated(
            "hairpin SYN, port free again",
            &run.out,
            &tcp(ep(F::HOST, tport), ep(F::CONTAINER, 80), TCP_SYN),
        );
    });
}

crate::both!(
    hairpin_packets_from_the_bridge_are_dnated_and_snated,
    hairpin_source_ports_avoid_host_sockets,
);
