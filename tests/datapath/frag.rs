//! IP fragments of datagrams to and from published ports: the first one's
//! ports carry the rest, in order or not.
use portfwd_common::{PROTO_TCP, PROTO_UDP};

use crate::{common, harness::*, packet::*};

/// A datagram of `len` payload bytes, its checksum right, cut in three.
fn udp_datagram_of(ip: &Ip, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    udp_with(ip, sport, dport, &payload)
}

/// Where a sender on a 1500-byte link cuts: the most payload a fragment of
/// 1500 bytes holds (IPv6: after its header and the fragment header).
fn cuts<F: Fam>() -> [usize; 2] {
    if F::HOST.is_ipv6() {
        [1448, 2896]
    } else {
        [1480, 2960]
    }
}

/// `out` is `want` byte for byte but for the IPv4 checksum, which verifies.
fn assert_same_fragment(what: &str, out: &[u8], want: &[u8]) {
    let clear = |p: &[u8]| {
        let mut c = p.to_vec();
        if !is_v6(p) {
            c[ETH_HLEN + 10..ETH_HLEN + 12].copy_from_slice(&[0, 0]);
        }
        c
    };
    assert_eq!(
        clear(out),
        clear(want),
        "{what}: not the expected fragment (the datagram rewritten whole, then cut the same way)"
    );
    assert!(ip_csum_ok(out), "{what}: the IPv4 checksum does not verify");
}

fn fragments_of_a_published_datagram_follow_the_first<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let ip = Ip::new(F::CLIENT, F::HOST, PROTO_UDP).id(0x4242);
    let whole = udp_datagram_of(&ip, 50_500, 5353, 4000);
    // The rewritten datagram, its checksum computed over all of it here,
    // cut the same way.
    let want_whole = {
        let mut w = whole.clone();
        set_ip(&mut w, true, F::DNS_CONTAINER);
        set_port(&mut w, 2, 53);
        fix_ip_csum(&mut w);
        fix_l4_csum(&mut w);
        w
    };
    let sent = fragments(&whole, &cuts::<F>(), 0x4242);
    let want = fragments(&want_whole, &cuts::<F>(), 0x4242);
    for (i, (f, w)) in sent.iter().zip(&want).enumerate() {
        let run = dp.ext(f);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "fragment {i} must go to the bridge"
        );
        assert_same_fragment(&format!("fragment {i}"), &run.out, w);
    }
    assert_eq!(
        dp.counter("fragment_forwarded"),
        3,
        "counter fragment_forwarded"
    );
    assert_eq!(dp.counter("ct_new"), 1, "one flow for the datagram");
}

fn a_tcp_segment_in_fragments_is_forwarded_whole<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let ip = Ip::new(F::CLIENT, F::HOST, PROTO_TCP).id(0x0777);
    let whole = tcp_with(&ip, 42_000, 8080, TCP_SYN, &[0xab; 64]);
    let mut want_whole = tcp_with(&ip, 42_000, 80, TCP_SYN, &[0xab; 64]);
    set_ip(&mut want_whole, true, F::CONTAINER);
    fix_ip_csum(&mut want_whole);
    fix_l4_csum(&mut want_whole);
    let sent = fragments(&whole, &[40], 0x0777);
    let want = fragments(&want_whole, &[40], 0x0777);
    for (i, (f, w)) in sent.iter().zip(&want).enumerate() {
        let run = dp.ext(f);
        assert_eq!(run.verdict, TC_ACT_REDIRECT, "TCP fragment {i}");
        assert_same_fragment(&format!("TCP fragment {i}"), &run.out, w);
    }
}

fn fragments_of_other_datagrams_are_left_alone<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    // To a port nothing publishes, in order.
    let whole = udp_datagram_of(
        &Ip::new(F::CLIENT, F::HOST, PROTO_UDP).id(0x1111),
        50_600,
        9999,
        4000,
    );
    for (i, f) in fragments(&whole, &cuts::<F>(), 0x1111).iter().enumerate() {
        assert_untouched(
            &format!("fragment {i} to an unpublished port"),
            &dp.ext(f),
            f,
        );
    }
    // Through the host to somewhere else: a later one with no first is not
    // held back either.
    let routed = udp_datagram_of(
        &Ip::new(F::CLIENT, F::ELSEWHERE, PROTO_UDP).id(0x2222),
        50_601,
        5353,
        4000,
    );
    let last = fragments(&routed, &cuts::<F>(), 0x2222)
        .pop()
        .expect("three fragments");
    assert_untouched("a routed datagram's last fragment", &dp.ext(&last), &last);
    assert!(
        dp.ct_entries().is_empty(),
        "no flow for datagrams portfwd does not serve"
    );
    assert_eq!(dp.counter("fragment_queued"), 0, "nothing waits");
}

fn a_containers_reply_in_fragments_follows_its_first<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let client = ep(F::CLIENT, 50_700);
    assert_eq!(
        dp.ext(&udp(client, ep(F::HOST, 5353), b"q")).verdict,
        TC_ACT_REDIRECT,
        "the query"
    );
    let ip = Ip::new(F::DNS_CONTAINER, F::CLIENT, PROTO_UDP).id(0x3333);
    let whole = udp_datagram_of(&ip, 53, client.port(), 3500);
    let want_whole = {
        let mut w = whole.clone();
        set_ip(&mut w, false, F::HOST);
        set_port(&mut w, 0, 5353);
        fix_ip_csum(&mut w);
        fix_l4_csum(&mut w);
        w
    };
    let sent = fragments(&whole, &cuts::<F>(), 0x3333);
    let want = fragments(&want_whole, &cuts::<F>(), 0x3333);
    for (i, (f, w)) in sent.iter().zip(&want).enumerate() {
        let run = dp.br(f);
        assert_eq!(
            run.verdict, TC_ACT_REDIRECT,
            "reply fragment {i} goes to the client"
        );
        assert_same_fragment(&format!("reply fragment {i}"), &run.out, w);
    }
}

/// Frames that come into the loopback of the calling thread's namespace.
struct Capture(std::os::fd::OwnedFd);

impl Capture {
    fn on_lo() -> Self {
        const ETH_P_ALL: u16 = 0x0003;
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a new descriptor nobody else owns.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid; the fields are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = 1;
        // SAFETY: `sll` is a sockaddr_ll of the size given.
        let rc = unsafe {
            libc::bind(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            rc,
            0,
            "bind AF_PACKET to lo: {}",
            std::io::Error::last_os_error()
        );
        Self(fd)
    }

    /// Every incoming IPv4 or IPv6 frame so far (loopback shows each twice, going
    /// out and coming in; only the incoming copy is kept).
    fn incoming(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while std::time::Instant::now() < deadline {
            let mut buf = vec![0u8; 4096];
            // SAFETY: an all-zero sockaddr_ll is valid for recvfrom to fill.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are writable for the sizes given.
            let n = unsafe {
                libc::recvfrom(
                    std::os::fd::AsRawFd::as_raw_fd(&self.0),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                    0,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n < 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            buf.truncate(n as usize);
            if from.sll_pkttype != libc::PACKET_OUTGOING
                && buf.len() > ETH_HLEN
                && matches!(
                    u16::from_be_bytes([buf[12], buf[13]]),
                    ETH_P_IP | ETH_P_IPV6
                )
            {
                frames.push(buf);
            }
        }
        frames
    }
}

/// Fragments that come before their first one wait for it, then go through
/// the program again in order: the first, then the waiting ones as they
/// came. Runs in a namespace of its own, where the replayed frames come into
/// the loopback and are captured there.
fn fragments_that_come_before_their_first_wait_for_it<F: Fam>(test: &str) {
    if datapath::<F>(test).is_none() {
        return;
    }
    let ns = common::Netns::new(format!("pft-{}-dp-frag{}", std::process::id(), F::NAME));
    let test = test.to_string();
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<F>(&test).expect("a datapath");
        let ip = Ip::new(F::CLIENT, F::HOST, PROTO_UDP).id(0x5151);
        let whole = udp_datagram_of(&ip, 50_800, 5353, 4000);
        let sent = fragments(&whole, &cuts::<F>(), 0x5151);
        let capture = Capture::on_lo();

        for (what, f) in [("last", &sent[2]), ("middle", &sent[1])] {
            let run = dp.ext(f);
            assert_eq!(
                run.verdict, TC_ACT_STOLEN,
                "the {what} fragment, before the first, waits"
            );
        }
        assert_eq!(dp.counter("fragment_queued"), 2, "counter fragment_queued");
        let run = dp.ext(&sent[0]);
        assert_eq!(
            run.verdict, TC_ACT_STOLEN,
            "the first fragment goes through the program again with the waiting ones"
        );
        assert_eq!(
            dp.counter("fragment_replayed"),
            2,
            "counter fragment_replayed"
        );

        let replayed = capture.incoming();
        let l3s: Vec<&[u8]> = replayed.iter().map(|f| l3(f)).collect();
        assert_eq!(
            l3s,
            vec![l3(&sent[0]), l3(&sent[2]), l3(&sent[1])],
            "the replayed frames: the first fragment, then the waiting ones in the order they came"
        );

        // Coming back in, they are forwarded like fragments in order.
        for (i, f) in replayed.iter().enumerate() {
            assert_eq!(
                dp.ext(f).verdict,
                TC_ACT_REDIRECT,
                "replayed frame {i} is forwarded"
            );
        }
        assert_eq!(
            dp.counter("fragment_forwarded"),
            3,
            "counter fragment_forwarded"
        );
    });
}

fn only_so_many_fragments_wait_for_their_first<F: Fam>(test: &str) {
    let Some(mut dp) = standard::<F>(test) else {
        return;
    };
    let ip = Ip::new(F::CLIENT, F::HOST, PROTO_UDP).id(0x6161);
    let whole = udp_datagram_of(&ip, 50_900, 5353, 8 * 200);
    let cuts: Vec<usize> = (1..8).map(|i| i * 200).collect();
    let sent = fragments(&whole, &cuts, 0x6161);
    let slots = portfwd_common::FRAG_QUEUE_SLOTS as usize;
    for (i, f) in sent[1..].iter().enumerate() {
        let run = dp.ext(f);
        if i < slots {
            assert_eq!(run.verdict, TC_ACT_STOLEN, "early fragment {i} waits");
        } else {
            assert_untouched(
                &format!("early fragment {i}, past the {slots} that wait"),
                &run,
                f,
            );
        }
    }
    assert_eq!(
        dp.counter("fragment_queued"),
        slots as u64,
        "counter fragment_queued"
    );
}

/// DF alone is not a fragment, and a fragment of something other than TCP
/// or UDP is not portfwd's.
#[test]
fn df_alone_is_no_fragment() {
    let Some(mut dp) = standard::<V4>("df_alone_is_no_fragment") else {
        return;
    };
    let syn = tcp_with(
        &Ip::new(CLIENT, HOST, PROTO_TCP).frag(IP_DF),
        42_002,
        8080,
        TCP_SYN,
        b"",
    );
    let run = dp.ext(&syn);
    assert_eq!(run.verdict, TC_ACT_REDIRECT, "a SYN with DF must be DNATed");
    let want = tcp_with(
        &Ip::new(CLIENT, CONTAINER, PROTO_TCP).frag(IP_DF),
        42_002,
        80,
        TCP_SYN,
        b"",
    );
    assert_translated("DNATed SYN with DF", &run.out, &want);
    assert_eq!(
        dp.counter("fragment_forwarded"),
        0,
        "DF alone is not a fragment"
    );

    let gre = ipv4_frame(&Ip::new(CLIENT, HOST, 47).frag(IP_MF), &[0u8; 32]);
    assert_untouched("a GRE fragment", &dp.ext(&gre), &gre);
}

crate::both!(
    fragments_of_a_published_datagram_follow_the_first,
    a_tcp_segment_in_fragments_is_forwarded_whole,
    fragments_of_other_datagrams_are_left_alone,
    a_containers_reply_in_fragments_follows_its_first,
    fragments_that_come_before_their_first_wait_for_it,
    only_so_many_fragments_wait_for_their_first,
);
