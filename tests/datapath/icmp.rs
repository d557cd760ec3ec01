//! ICMP errors about portfwd flows, both ways, as the kernel's nf_nat
//! translates them: the expected packets are built from scratch with their
//! checksums computed here, never by the code under test.
use std::net::SocketAddr;

use portfwd::family::Af;

use crate::{harness::*, packet::*};

/// (type, code, bytes 4..8 of the ICMP header): each error the datapath
/// translates, in the family's ICMP.
fn errors<F: Fam>() -> Vec<(u8, u8, [u8; 4])> {
    let too_big = F::too_big(1400);
    let port_unreach = F::PORT_UNREACH;
    match F::FAMILY {
        Af::V4 => vec![
            too_big,                                  // fragmentation needed, MTU 1400
            (port_unreach.0, port_unreach.1, [0; 4]), // port unreachable
            (3, 1, [0; 4]),                           // host unreachable
            (4, 0, [0; 4]),                           // source quench
            (11, 0, [0; 4]),                          // time exceeded
            (12, 0, [20, 0, 0, 0]),                   // parameter problem
        ],
        Af::V6 => vec![
            too_big,                                  // packet too big, MTU 1400
            (port_unreach.0, port_unreach.1, [0; 4]), // port unreachable
            (1, 3, [0; 4]),                           // address unreachable
            (1, 1, [0; 4]),                           // administratively prohibited
            (3, 0, [0; 4]),                           // time exceeded (hop limit)
            (4, 0, [0, 0, 0, 40]),                    // parameter problem
        ],
    }
}

/// Time exceeded, and redirect (ICMPv6: the neighbour discovery message).
fn time_exceeded<F: Fam>() -> u8 {
    match F::FAMILY {
        Af::V4 => 11,
        Af::V6 => 3,
    }
}

fn redirect<F: Fam>() -> u8 {
    match F::FAMILY {
        Af::V4 => 5,
        Af::V6 => 137,
    }
}

/// A TCP flow client -> HOST:8080 -> CONTAINER:80 with its handshake done;
/// returns the SYN-ACK as the client saw it (what an error about it quotes).
fn tcp_flow<F: Fam>(dp: &mut Datapath<F>, client: SocketAddr) -> Vec<u8> {
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the SYN"
    );
    let run = dp.br(&tcp(container, client, TCP_SYN | TCP_ACK));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the SYN-ACK");
    run.out
}

fn errors_from_outside_about_a_reply_reach_the_container<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    for (i, (ty, code, rest)) in errors::<F>().into_iter().enumerate() {
        let client = ep(F::CLIENT, 40_000 + i as u16);
        let sent = tcp_flow(&mut dp, client);
        // As the container sent it, before the reverse NAT.
        let orig = tcp(ep(F::CONTAINER, 80), client, TCP_SYN | TCP_ACK);

        let err = icmp_error(F::ROUTER, F::HOST, ty, code, rest, l3(&sent));
        let run = dp.ext(&err);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "ICMP {ty}/{code} about a reply must be redirected to the bridge"
        );
        let want = icmp_error(F::ROUTER, F::CONTAINER, ty, code, rest, l3(&orig));
        assert_icmp_translated(
            &format!("ICMP {ty}/{code} from outside, whole quote"),
            &run.out,
            &want,
            true,
        );
    }
    assert_eq!(
        dp.counter("icmp_to_container"),
        errors::<F>().len() as u64,
        "counter icmp_to_container"
    );
}

/// A quote may stop 8 bytes into TCP (RFC 792): the ports are there, the
/// checksum is not, and what is quoted is translated all the same.
fn a_quote_cut_after_eight_bytes_is_translated<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 40_100);
    let sent = tcp_flow(&mut dp, client);
    let orig = tcp(ep(F::CONTAINER, 80), client, TCP_SYN | TCP_ACK);
    let cut = |p: &[u8]| l3(p)[..l4_off(p) - ETH_HLEN + 8].to_vec();
    let (ty, code, rest) = F::too_big(1400);

    let run = dp.ext(&icmp_error(F::ROUTER, F::HOST, ty, code, rest, &cut(&sent)));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the cut error is redirected");
    let want = icmp_error(F::ROUTER, F::CONTAINER, ty, code, rest, &cut(&orig));
    assert_icmp_translated("ICMP with an 8-byte quote", &run.out, &want, false);
}

fn udp_quotes_keep_a_zero_checksum_zero<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let pu = F::PORT_UNREACH;
    let client = ep(F::CLIENT, 50_000);
    let host = ep(F::HOST, 5353);
    let dns = ep(F::DNS_CONTAINER, 53);
    assert_eq!(
        dp.ext(&udp(client, host, b"query")).verdict,
        TC_ACT_REDIRECT,
        "the query"
    );
    let answer = dp.br(&udp(dns, client, b"answer"));
    assert_eq!(answer.verdict, TC_ACT_REDIRECT, "the answer");

    // The client has closed its socket: port unreachable, quoting the whole
    // answer, once with its checksum and once with none (0).
    let orig = udp(dns, client, b"answer");
    let mut sent_none = answer.out.clone();
    set_l4_csum(&mut sent_none, 0);
    let mut orig_none = orig.clone();
    set_l4_csum(&mut orig_none, 0);
    for (what, sent, want_quote) in [
        ("checksummed", &answer.out, &orig),
        ("without checksum", &sent_none, &orig_none),
    ] {
        let run = dp.ext(&icmp_error(
            F::CLIENT,
            F::HOST,
            pu.0,
            pu.1,
            [0; 4],
            l3(sent),
        ));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "{what}: redirected");
        let want = icmp_error(
            F::CLIENT,
            F::DNS_CONTAINER,
            pu.0,
            pu.1,
            [0; 4],
            l3(want_quote),
        );
        assert_icmp_translated(&format!("UDP quote {what}"), &run.out, &want, true);
        if what == "without checksum" {
            assert_eq!(
                l4_csum(&quote_of(&run.out)),
                0,
                "a UDP checksum of 0 stays 0"
            );
        }
    }
}

fn errors_from_a_container_reach_the_client<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let pu = F::PORT_UNREACH;
    let client = ep(F::CLIENT, 50_100);
    let host = ep(F::HOST, 5353);
    let query = udp(client, host, b"query");
    let delivered = dp.ext(&query);
    assert_eq!(delivered.verdict, TC_ACT_REDIRECT, "the query");

    // Nothing listens in the container: it answers port unreachable,
    // quoting the datagram as it got it.
    let err = icmp_error(
        F::DNS_CONTAINER,
        F::CLIENT,
        pu.0,
        pu.1,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the error goes to the client");
    let want = icmp_error(F::HOST, F::CLIENT, pu.0, pu.1, [0; 4], l3(&query));
    assert_icmp_translated("port unreachable from the container", &run.out, &want, true);
    assert_eq!(dp.counter("icmp_to_client"), 1, "counter icmp_to_client");

    // The same for TCP, the client's SYN quoted.
    let tclient = ep(F::CLIENT, 40_200);
    let syn = tcp(tclient, ep(F::HOST, 8080), TCP_SYN);
    let delivered = dp.ext(&syn);
    let err = icmp_error(
        F::CONTAINER,
        F::CLIENT,
        pu.0,
        pu.1,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the TCP error goes to the client"
    );
    let want = icmp_error(F::HOST, F::CLIENT, pu.0, pu.1, [0; 4], l3(&syn));
    assert_icmp_translated("unreachable about a SYN", &run.out, &want, true);
}

fn errors_from_a_container_about_a_hairpin_flow_reach_the_other_container<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let pu = F::PORT_UNREACH;
    // A random high port: the source port is kept unless a host socket
    // holds it.
    let asker = ep(F::OTHER_CONTAINER, 52_311);
    let query = udp(asker, ep(F::HOST, 5353), b"query");
    let delivered = dp.br(&query);
    assert_eq!(delivered.verdict, TC_ACT_REDIRECT, "the hairpin query");
    let snat = src_of(&delivered.out);
    assert_eq!(
        snat.ip(),
        F::HOST,
        "a hairpin flow comes from the host address"
    );

    let err = icmp_error(
        F::DNS_CONTAINER,
        F::HOST,
        pu.0,
        pu.1,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the error goes back over the bridge"
    );
    let want = icmp_error(F::HOST, F::OTHER_CONTAINER, pu.0, pu.1, [0; 4], l3(&query));
    assert_icmp_translated("hairpin port unreachable", &run.out, &want, true);
}

fn errors_that_match_no_flow_are_left_alone<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let pu = F::PORT_UNREACH;
    let tb = F::too_big(1400);
    let reply = tcp(ep(F::HOST, 8080), ep(F::CLIENT, 40_300), TCP_SYN | TCP_ACK);
    let err = icmp_error(F::ROUTER, F::HOST, tb.0, tb.1, tb.2, l3(&reply));
    assert_untouched(
        "an error about a tuple portfwd has no flow for",
        &dp.ext(&err),
        &err,
    );
    let sent = tcp(
        ep(F::CONTAINER, 80),
        ep(F::CLIENT, 40_300),
        TCP_SYN | TCP_ACK,
    );
    let err = icmp_error(F::CONTAINER, F::CLIENT, pu.0, pu.1, [0; 4], l3(&sent));
    assert_untouched(
        "a container's error about its own traffic",
        &dp.br(&err),
        &err,
    );
}

fn errors_with_a_bad_checksum_are_dropped<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let tb = F::too_big(1400);
    let sent = tcp_flow(&mut dp, ep(F::CLIENT, 40_400));
    let mut err = icmp_error(F::ROUTER, F::HOST, tb.0, tb.1, tb.2, l3(&sent));
    let icmp = l4_off(&err);
    err[icmp + 2] ^= 0x40;
    let run = dp.ext(&err);
    assert_eq!(
        run.verdict, TC_ACT_SHOT,
        "an error about a flow with a bad ICMP checksum is dropped"
    );
    assert_eq!(dp.counter("drop_icmp_csum"), 1, "counter drop_icmp_csum");
}

fn echo_redirects_and_errors_about_errors_are_left_alone<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let pu = F::PORT_UNREACH;
    let sent = tcp_flow(&mut dp, ep(F::CLIENT, 40_500));
    let echo = |ty| icmp_error(F::CLIENT, F::HOST, ty, 0, [0x12, 0x34, 0, 1], b"ping");
    for (what, pkt) in [
        ("echo request", echo(F::ECHO_REQUEST)),
        ("echo reply", echo(F::ECHO_REPLY)),
        (
            "a redirect about a flow",
            icmp_error(F::ROUTER, F::HOST, redirect::<F>(), 1, [0; 4], l3(&sent)),
        ),
        (
            "an error quoting an error",
            icmp_error(
                F::ROUTER,
                F::HOST,
                time_exceeded::<F>(),
                0,
                [0; 4],
                l3(&icmp_error(
                    F::HOST,
                    F::CLIENT,
                    pu.0,
                    pu.1,
                    [0; 4],
                    l3(&sent),
                )),
            ),
        ),
    ] {
        assert_untouched(what, &dp.ext(&pkt), &pkt);
    }
    assert_eq!(dp.counter("icmp_to_container"), 0, "nothing was translated");
}

crate::both!(
    errors_from_outside_about_a_reply_reach_the_container,
    a_quote_cut_after_eight_bytes_is_translated,
    udp_quotes_keep_a_zero_checksum_zero,
    errors_from_a_container_reach_the_client,
    errors_from_a_container_about_a_hairpin_flow_reach_the_other_container,
    errors_that_match_no_flow_are_left_alone,
    errors_with_a_bad_checksum_are_dropped,
    echo_redirects_and_errors_about_errors_are_left_alone,
);
