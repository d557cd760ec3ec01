//! IP fragments.

use portfwd_common::{PROTO_TCP, PROTO_UDP};

use crate::{harness::*, packet::*};

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
