//! Reverse NAT: the containers' replies.
use portfwd_common::{CT_DIR_REPLY, CT_F_ACK, CT_F_SYN, CT_LIFETIME_TCP_NS, PROTO_TCP};

use crate::{harness::*, packet::*};

fn the_reply_finds_the_entry_the_syn_created<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 40_001);
    let host = ep(F::HOST2, 8080);
    let container = ep(F::CONTAINER, 80);
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
    let from = ep(rkey.saddr_be.to_ip(), u16::from_be(rkey.sport_be));
    let to = ep(rkey.daddr_be.to_ip(), u16::from_be(rkey.dport_be));
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
        &Ip::new(F::CONTAINER, F::CLIENT, PROTO_TCP),
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
        &Ip::new(F::HOST2, F::CLIENT, PROTO_TCP),
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
        ep(F::CONTAINER, 80),
        ep(F::OTHER_CLIENT, 40_001),
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

/// A SYN-ACK that answers no SYN portfwd forwarded belongs to another path
/// to the container (Docker's own DNAT, plain routing) that reuses the tuple
/// of a flow portfwd still tracks: it is left to the kernel, and the stale
/// entries go so that the rest of that connection is left alone too.
fn replies_of_flows_portfwd_did_not_create_are_left_alone<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    for (what, close) in [("finished", true), ("established, never closed", false)] {
        let client = ep(F::CLIENT, if close { 40_700 } else { 40_701 });
        assert_eq!(
            dp.ext(&tcp(client, host, TCP_SYN)).verdict,
            TC_ACT_REDIRECT,
            "{what}: SYN"
        );
        let syn_ack = tcp(container, client, TCP_SYN | TCP_ACK);
        assert_eq!(dp.br(&syn_ack).verdict, TC_ACT_REDIRECT, "{what}: SYN-ACK");
        // A retransmitted SYN-ACK during the handshake is still ours.
        assert_eq!(
            dp.br(&syn_ack).verdict,
            TC_ACT_REDIRECT,
            "{what}: a retransmitted SYN-ACK in the handshake"
        );
        assert_eq!(
            dp.ext(&tcp(client, host, TCP_ACK)).verdict,
            TC_ACT_REDIRECT,
            "{what}: ACK"
        );
        if close {
            dp.ext(&tcp(client, host, TCP_FIN | TCP_ACK));
            dp.br(&tcp(container, client, TCP_FIN | TCP_ACK));
        }
        // The other path's connection on the same tuple.
        let before = dp.counter("ct_foreign");
        assert_untouched(
            &format!("{what}: a foreign SYN-ACK"),
            &dp.br(&syn_ack),
            &syn_ack,
        );
        assert_eq!(
            dp.counter("ct_foreign"),
            before + 1,
            "{what}: counter ct_foreign"
        );
        assert!(
            dp.ct(&ct_key(container, client, PROTO_TCP)).is_none()
                && dp.ct(&ct_key(client, host, PROTO_TCP)).is_none(),
            "{what}: the stale entries are gone"
        );
        let data = tcp(container, client, TCP_ACK | TCP_PSH);
        assert_untouched(
            &format!("{what}: the foreign connection's data"),
            &dp.br(&data),
            &data,
        );
    }
}

/// A new SYN on the tuple of an established or finished flow starts a new
/// flow (fresh entries), not a continuation of the old one.
fn a_syn_reusing_a_tuple_starts_a_new_flow<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 40_800);
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    dp.ext(&tcp(client, host, TCP_SYN));
    dp.br(&tcp(container, client, TCP_SYN | TCP_ACK));
    dp.ext(&tcp(client, host, TCP_ACK));
    let old = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("the forward entry");
    assert_eq!(old.flags, CT_F_SYN | CT_F_ACK, "established");

    let run = dp.ext(&tcp(client, host, TCP_SYN));
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "the new SYN is forwarded");
    assert_eq!(dp.counter("ct_replaced"), 1, "counter ct_replaced");
    let new = dp
        .ct(&ct_key(client, host, PROTO_TCP))
        .expect("the new forward entry");
    assert_eq!(
        (new.flags, new.packets),
        (CT_F_SYN, 1),
        "a fresh entry: only the SYN seen, one packet"
    );
    let rep = dp
        .ct(&ct_key(container, client, PROTO_TCP))
        .expect("the new reply entry");
    assert_eq!((rep.flags, rep.packets), (0, 0), "a fresh reply entry");
    // The container's answer to the new SYN is ours.
    assert_eq!(
        dp.br(&tcp(container, client, TCP_SYN | TCP_ACK)).verdict,
        TC_ACT_REDIRECT,
        "the SYN-ACK of the new flow"
    );
}

/// Once a flow has closed and the container's last ACK went out, what the
/// container sends on the tuple is its TIME_WAIT answering a SYN that came
/// another way (Docker's own DNAT, say): left to the kernel. A FIN the client
/// sends again (it missed that ACK) makes the container's next answer the
/// flow's again.
fn after_the_last_ack_the_containers_time_wait_is_left_alone<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 40_900);
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    dp.ext(&tcp(client, host, TCP_SYN));
    dp.br(&tcp(container, client, TCP_SYN | TCP_ACK));
    dp.ext(&tcp(client, host, TCP_ACK));
    // The server closes first.
    assert_eq!(
        dp.br(&tcp(container, client, TCP_FIN | TCP_ACK)).verdict,
        TC_ACT_REDIRECT,
        "its FIN"
    );
    assert_eq!(
        dp.ext(&tcp(client, host, TCP_FIN | TCP_ACK)).verdict,
        TC_ACT_REDIRECT,
        "the client's FIN"
    );
    let last = tcp(container, client, TCP_ACK);
    let run = dp.br(&last);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the container's last ACK goes to the client"
    );
    assert_translated("the last ACK", &run.out, &tcp(host, client, TCP_ACK));

    assert_untouched(
        "the TIME_WAIT's answer to another path's SYN",
        &dp.br(&last),
        &last,
    );
    assert_eq!(dp.counter("ct_foreign"), 1, "counter ct_foreign");

    assert_eq!(
        dp.ext(&tcp(client, host, TCP_FIN | TCP_ACK)).verdict,
        TC_ACT_REDIRECT,
        "the client's FIN again"
    );
    let run = dp.br(&last);
    assert_eq!(
        run.verdict, TC_ACT_REDIRECT,
        "the ACK to the FIN sent again is the flow's"
    );
    assert_translated("the ACK again", &run.out, &tcp(host, client, TCP_ACK));
}

crate::both!(
    the_reply_finds_the_entry_the_syn_created,
    replies_of_flows_portfwd_did_not_create_are_left_alone,
    a_syn_reusing_a_tuple_starts_a_new_flow,
    after_the_last_ack_the_containers_time_wait_is_left_alone,
);
