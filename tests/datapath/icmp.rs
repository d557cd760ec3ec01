//! ICMP errors about portfwd flows, both ways, as the kernel's nf_nat
//! translates them: the expected packets are built from scratch with their
//! checksums computed here, never by the code under test.
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::{harness::*, packet::*};

/// A router between the host and its clients.
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

const DEST_UNREACH: u8 = 3;
const SOURCE_QUENCH: u8 = 4;
const REDIRECT: u8 = 5;
const TIME_EXCEEDED: u8 = 11;
const PARAMETERPROB: u8 = 12;
const ECHO_REPLY: u8 = 0;
const ECHO_REQUEST: u8 = 8;

/// (type, code, bytes 4..8 of the ICMP header): each error the datapath
/// translates.
const ERRORS: [(u8, u8, [u8; 4]); 6] = [
    (DEST_UNREACH, 4, [0, 0, 0x05, 0x78]), // fragmentation needed, MTU 1400
    (DEST_UNREACH, 3, [0; 4]),             // port unreachable
    (DEST_UNREACH, 1, [0; 4]),             // host unreachable
    (SOURCE_QUENCH, 0, [0; 4]),
    (TIME_EXCEEDED, 0, [0; 4]),
    (PARAMETERPROB, 0, [20, 0, 0, 0]),
];

/// A TCP flow client -> HOST:8080 -> CONTAINER:80 with its handshake done;
/// returns the SYN-ACK as the client saw it (what an error about it quotes).
fn tcp_flow(dp: &mut Datapath, client: SocketAddrV4) -> Vec<u8> {
    let host = ep(HOST, 8080);
    let container = ep(CONTAINER, 80);
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_SYN)).verdict,
        TC_ACT_REDIRECT,
        "the SYN"
    );
    let run = dp.br(&tcp(container, client, TCP_SYN | TCP_ACK));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the SYN-ACK");
    run.out
}

#[test]
fn errors_from_outside_about_a_reply_reach_the_container() {
    let Some(mut dp) = standard("errors_from_outside_about_a_reply_reach_the_container") else {
        return;
    };
    for (i, (ty, code, rest)) in ERRORS.into_iter().enumerate() {
        let client = ep(CLIENT, 40_000 + i as u16);
        let sent = tcp_flow(&mut dp, client);
        // As the container sent it, before the reverse NAT.
        let orig = tcp(ep(CONTAINER, 80), client, TCP_SYN | TCP_ACK);

        let err = icmp_error(ROUTER, HOST, ty, code, rest, l3(&sent));
        let run = dp.ext(&err);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "ICMP {ty}/{code} about a reply must be redirected to the bridge"
        );
        let want = icmp_error(ROUTER, CONTAINER, ty, code, rest, l3(&orig));
        assert_icmp_translated(
            &format!("ICMP {ty}/{code} from outside, whole quote"),
            &run.out,
            &want,
            true,
        );
    }
    assert_eq!(
        dp.counter("icmp_to_container"),
        ERRORS.len() as u64,
        "counter icmp_to_container"
    );
}

/// A quote may stop 8 bytes into TCP (RFC 792): the ports are there, the
/// checksum is not, and what is quoted is translated all the same.
#[test]
fn a_quote_cut_after_eight_bytes_is_translated() {
    let Some(mut dp) = standard("a_quote_cut_after_eight_bytes_is_translated") else {
        return;
    };
    let client = ep(CLIENT, 40_100);
    let sent = tcp_flow(&mut dp, client);
    let orig = tcp(ep(CONTAINER, 80), client, TCP_SYN | TCP_ACK);
    let cut = |p: &[u8]| l3(p)[..ihl(p) + 8].to_vec();

    let run = dp.ext(&icmp_error(
        ROUTER,
        HOST,
        DEST_UNREACH,
        4,
        [0, 0, 5, 0x78],
        &cut(&sent),
    ));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the cut error is redirected");
    let want = icmp_error(
        ROUTER,
        CONTAINER,
        DEST_UNREACH,
        4,
        [0, 0, 5, 0x78],
        &cut(&orig),
    );
    assert_icmp_translated("ICMP with an 8-byte quote", &run.out, &want, false);
}

#[test]
fn udp_quotes_keep_a_zero_checksum_zero() {
    let Some(mut dp) = standard("udp_quotes_keep_a_zero_checksum_zero") else {
        return;
    };
    let client = ep(CLIENT, 50_000);
    let host = ep(HOST, 5353);
    let dns = ep(DNS_CONTAINER, 53);
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
        let run = dp.ext(&icmp_error(CLIENT, HOST, DEST_UNREACH, 3, [0; 4], l3(sent)));
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "{what}: redirected");
        let want = icmp_error(
            CLIENT,
            DNS_CONTAINER,
            DEST_UNREACH,
            3,
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

#[test]
fn errors_from_a_container_reach_the_client() {
    let Some(mut dp) = standard("errors_from_a_container_reach_the_client") else {
        return;
    };
    let client = ep(CLIENT, 50_100);
    let host = ep(HOST, 5353);
    let query = udp(client, host, b"query");
    let delivered = dp.ext(&query);
    assert_eq!(delivered.verdict, TC_ACT_REDIRECT, "the query");

    // Nothing listens in the container: it answers port unreachable,
    // quoting the datagram as it got it.
    let err = icmp_error(
        DNS_CONTAINER,
        CLIENT,
        DEST_UNREACH,
        3,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the error goes to the client");
    let want = icmp_error(HOST, CLIENT, DEST_UNREACH, 3, [0; 4], l3(&query));
    assert_icmp_translated("port unreachable from the container", &run.out, &want, true);
    assert_eq!(dp.counter("icmp_to_client"), 1, "counter icmp_to_client");

    // The same for TCP, the client's SYN quoted.
    let tclient = ep(CLIENT, 40_200);
    let syn = tcp(tclient, ep(HOST, 8080), TCP_SYN);
    let delivered = dp.ext(&syn);
    let err = icmp_error(
        CONTAINER,
        CLIENT,
        DEST_UNREACH,
        3,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the TCP error goes to the client"
    );
    let want = icmp_error(HOST, CLIENT, DEST_UNREACH, 3, [0; 4], l3(&syn));
    assert_icmp_translated("unreachable about a SYN", &run.out, &want, true);
}

#[test]
fn errors_from_a_container_about_a_hairpin_flow_reach_the_other_container() {
    let Some(mut dp) =
        standard("errors_from_a_container_about_a_hairpin_flow_reach_the_other_container")
    else {
        return;
    };
    // A random high port: the source port is kept unless a host socket
    // holds it.
    let asker = ep(OTHER_CONTAINER, 52_311);
    let query = udp(asker, ep(HOST, 5353), b"query");
    let delivered = dp.br(&query);
    assert_eq!(delivered.verdict, TC_ACT_REDIRECT, "the hairpin query");
    let snat = src_of(&delivered.out);
    assert_eq!(
        *snat.ip(),
        HOST,
        "a hairpin flow comes from the host address"
    );

    let err = icmp_error(
        DNS_CONTAINER,
        HOST,
        DEST_UNREACH,
        3,
        [0; 4],
        l3(&delivered.out),
    );
    let run = dp.br(&err);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the error goes back over the bridge"
    );
    let want = icmp_error(HOST, OTHER_CONTAINER, DEST_UNREACH, 3, [0; 4], l3(&query));
    assert_icmp_translated("hairpin port unreachable", &run.out, &want, true);
}

#[test]
fn errors_that_match_no_flow_are_left_alone() {
    let Some(mut dp) = standard("errors_that_match_no_flow_are_left_alone") else {
        return;
    };
    let reply = tcp(ep(HOST, 8080), ep(CLIENT, 40_300), TCP_SYN | TCP_ACK);
    let err = icmp_error(ROUTER, HOST, DEST_UNREACH, 4, [0, 0, 5, 0x78], l3(&reply));
    assert_untouched(
        "an error about a tuple portfwd has no flow for",
        &dp.ext(&err),
        &err,
    );
    let sent = tcp(ep(CONTAINER, 80), ep(CLIENT, 40_300), TCP_SYN | TCP_ACK);
    let err = icmp_error(CONTAINER, CLIENT, DEST_UNREACH, 3, [0; 4], l3(&sent));
    assert_untouched(
        "a container's error about its own traffic",
        &dp.br(&err),
        &err,
    );
}

#[test]
fn errors_with_a_bad_checksum_are_dropped() {
    let Some(mut dp) = standard("errors_with_a_bad_checksum_are_dropped") else {
        return;
    };
    let sent = tcp_flow(&mut dp, ep(CLIENT, 40_400));
    let mut err = icmp_error(ROUTER, HOST, DEST_UNREACH, 4, [0, 0, 5, 0x78], l3(&sent));
    let icmp = l4_off(&err);
    err[icmp + 2] ^= 0x40;
    let run = dp.ext(&err);
    assert_eq!(
        run.verdict, TC_ACT_SHOT,
        "an error about a flow with a bad ICMP checksum is dropped"
    );
    assert_eq!(dp.counter("drop_icmp_csum"), 1, "counter drop_icmp_csum");
}

#[test]
fn echo_redirects_and_errors_about_errors_are_left_alone() {
    let Some(mut dp) = standard("echo_redirects_and_errors_about_errors_are_left_alone") else {
        return;
    };
    let sent = tcp_flow(&mut dp, ep(CLIENT, 40_500));
    let echo = |ty| {
        let mut m = vec![ty, 0, 0, 0, 0x12, 0x34, 0, 1];
        m.extend_from_slice(b"ping");
        let c = !ones_sum(&m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        ipv4_frame(&Ip::new(CLIENT, HOST, PROTO_ICMP), &m)
    };
    for (what, pkt) in [
        ("echo request", echo(ECHO_REQUEST)),
        ("echo reply", echo(ECHO_REPLY)),
        (
            "a redirect about a flow",
            icmp_error(ROUTER, HOST, REDIRECT, 1, ROUTER.octets(), l3(&sent)),
        ),
        (
            "an error quoting an error",
            icmp_error(
                ROUTER,
                HOST,
                TIME_EXCEEDED,
                0,
                [0; 4],
                l3(&icmp_error(
                    HOST,
                    CLIENT,
                    DEST_UNREACH,
                    3,
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
