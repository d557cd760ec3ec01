//! A packet fuzz of both entry points: valid packets of live flows (TCP,
//! UDP, ICMP errors, fragments, hairpin), mutated at random (cut short, bytes
//! flipped, IHL, lengths and fragment fields made up, checksums sometimes
//! fixed up afterwards; for IPv6 the next headers and lengths that steer
//! the extension header walk made up too). Whatever comes out is either the packet untouched or
//! a packet whose checksums verify wherever the input's did. Runs in a
//! namespace of its own: early fragments may be replayed into its loopback.
use portfwd_common::{PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

use crate::{common, harness::*, packet::*};

/// Seeds: packets that reach every path with the flows `flows` sets up.
fn seeds<F: Fam>() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let ext = portfwd_common::PROG_EXTERNAL_INGRESS;
    let br = portfwd_common::PROG_BRIDGE_INGRESS;
    let client = ep(F::CLIENT, 45_000);
    let uclient = ep(F::CLIENT, 45_001);
    let host = ep(F::HOST, 8080);
    let container = ep(F::CONTAINER, 80);
    let dns = ep(F::DNS_CONTAINER, 53);
    let big = udp_with(
        &Ip::new(F::CLIENT, F::HOST, PROTO_UDP).id(0x7777),
        uclient.port(),
        5353,
        &[0x42; 2000],
    );
    let frags = fragments(&big, &[1480], 0x7777);
    let reply = tcp(ep(F::HOST, 8080), client, TCP_ACK);
    let pu = F::PORT_UNREACH;
    let mut seeds = vec![
        ("syn", ext, tcp(ep(F::CLIENT, 45_100), host, TCP_SYN)),
        (
            "ack",
            ext,
            tcp_with(
                &Ip::new(F::CLIENT, F::HOST, PROTO_TCP),
                client.port(),
                8080,
                TCP_ACK,
                b"data",
            ),
        ),
        ("udp", ext, udp(uclient, ep(F::HOST, 5353), b"query")),
        (
            "reply",
            br,
            tcp_with(
                &Ip::new(F::CONTAINER, F::CLIENT, PROTO_TCP),
                80,
                client.port(),
                TCP_ACK,
                b"answer",
            ),
        ),
        ("udp reply", br, udp(dns, uclient, b"answer")),
        (
            "hairpin",
            br,
            tcp(ep(F::OTHER_CONTAINER, 45_200), host, TCP_SYN),
        ),
        (
            "icmp in",
            ext,
            icmp_error(F::CLIENT, F::HOST, pu.0, pu.1, [0; 4], l3(&reply)),
        ),
        (
            "icmp out",
            br,
            icmp_error(
                F::CONTAINER,
                F::CLIENT,
                pu.0,
                pu.1,
                [0; 4],
                l3(&tcp(client, container, TCP_ACK)),
            ),
        ),
        ("first fragment", ext, frags[0].clone()),
        ("last fragment", ext, frags[1].clone()),
    ];
    if F::HOST.is_ipv6() {
        // Extension headers before TCP and UDP, both ways.
        let opts = |ip: Ip| {
            ip.ext(EXT_HOP_BY_HOP, ext_options(1))
                .ext(EXT_DEST_OPTS, ext_options(2))
                .ext(EXT_ROUTING, ext_routing())
        };
        seeds.push((
            "syn behind options",
            ext,
            tcp_with(
                &opts(Ip::new(F::CLIENT, F::HOST, PROTO_TCP)),
                45_101,
                8080,
                TCP_SYN,
                b"",
            ),
        ));
        seeds.push((
            "udp reply behind options",
            br,
            udp_with(
                &opts(Ip::new(F::DNS_CONTAINER, F::CLIENT, PROTO_UDP)),
                53,
                uclient.port(),
                b"answer",
            ),
        ));
    }
    seeds
}

fn flows<F: Fam>(dp: &mut Datapath<F>) {
    let client = ep(F::CLIENT, 45_000);
    dp.ext(&tcp(client, ep(F::HOST, 8080), TCP_SYN));
    dp.br(&tcp(ep(F::CONTAINER, 80), client, TCP_SYN | TCP_ACK));
    dp.ext(&tcp(client, ep(F::HOST, 8080), TCP_ACK));
    dp.ext(&udp(ep(F::CLIENT, 45_001), ep(F::HOST, 5353), b"q"));
}

/// The checksums of `p` that verify: (IPv4 header, L4 or ICMP); for IPv6,
/// which has no header checksum, (the headers are whole, L4 or ICMPv6).
fn checks(p: &[u8]) -> (bool, bool) {
    if p.len() >= ETH_HLEN + IP6_HLEN && is_v6(p) {
        return checks6(p);
    }
    if p.len() < ETH_HLEN + 20 || u16::from_be_bytes([p[12], p[13]]) != ETH_P_IP {
        return (false, false);
    }
    let hl = ihl(p);
    let total = ip_total_len(p);
    if hl < 20 || p.len() < ETH_HLEN + hl || total < hl || p.len() < ETH_HLEN + total {
        return (false, false);
    }
    let ip = ip_csum_ok(p);
    let frag = u16::from_be_bytes([p[ETH_HLEN + 6], p[ETH_HLEN + 7]]) & 0x3fff != 0;
    let l4 = match ip_proto(p) {
        _ if frag => false,
        PROTO_TCP if total >= hl + 20 => l4_csum_ok(p),
        PROTO_UDP if total >= hl + 8 => l4_csum_ok(p),
        PROTO_ICMP if total >= hl + 8 => icmp_csum_ok(p),
        _ => false,
    };
    (ip, l4)
}

/// `checks` for IPv6.
fn checks6(p: &[u8]) -> (bool, bool) {
    let Some((next, off, frag)) = walk6(p) else {
        return (false, false);
    };
    let total = ip_total_len(p);
    let l4 = match next {
        _ if frag => false,
        PROTO_TCP if total >= off + 20 => l4_csum_ok(p),
        PROTO_UDP if total >= off + 8 => l4_csum_ok(p),
        PROTO_ICMPV6 if total >= off + 8 => icmp_csum_ok(p),
        _ => false,
    };
    (true, l4)
}

/// The upper-layer protocol of an IPv6 packet, its offset from the L3
/// header, and whether it is a fragment: the extension headers walked with
/// every length checked against the packet (the builder's readers trust
/// them). None if they run past it.
fn walk6(p: &[u8]) -> Option<(u8, usize, bool)> {
    if p[ETH_HLEN] >> 4 != 6 {
        return None;
    }
    let total = ip_total_len(p);
    if p.len() < ETH_HLEN + total {
        return None;
    }
    let (mut next, mut off, mut frag) = (p[ETH_HLEN + 6], IP6_HLEN, false);
    loop {
        let len = match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS if off + 2 <= total => {
                (p[ETH_HLEN + off + 1] as usize + 1) * 8
            }
            EXT_FRAGMENT if off + 8 <= total => {
                let w = u16::from_be_bytes([p[ETH_HLEN + off + 2], p[ETH_HLEN + off + 3]]);
                frag |= w & 0xfff9 != 0;
                8
            }
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DEST_OPTS | EXT_FRAGMENT => return None,
            _ => return Some((next, off, frag)),
        };
        next = p[ETH_HLEN + off];
        off += len;
        if off > total {
            return None;
        }
    }
}

/// IPv6 mutations: the fields that steer the extension header walk.
fn mutate6(rng: &mut Rng, p: &mut [u8]) {
    let nexts = [
        EXT_HOP_BY_HOP,
        EXT_ROUTING,
        EXT_FRAGMENT,
        EXT_DEST_OPTS,
        PROTO_TCP,
        PROTO_UDP,
        PROTO_ICMPV6,
        50,
        59,
        rng.next() as u8,
    ];
    let l4 = l4_off(p);
    match rng.below(4) {
        // Another next header, in the IPv6 header or the first extension
        // header.
        0 => {
            let at = if l4 > ETH_HLEN + IP6_HLEN && rng.below(2) == 0 {
                ETH_HLEN + IP6_HLEN
            } else {
                ETH_HLEN + 6
            };
            p[at] = nexts[rng.below(nexts.len() as u64) as usize];
        }
        // Another length of the first extension header, or fragment word.
        1 if l4 > ETH_HLEN + IP6_HLEN => {
            let at = ETH_HLEN + IP6_HLEN + 1 + rng.below(3) as usize;
            p[at] = rng.next() as u8;
        }
        // Another payload length.
        _ => {
            let len = rng.below(0x10000) as u16;
            p[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&len.to_be_bytes());
        }
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    let v6 = is_v6(&p);
    let hlen = if v6 { IP6_HLEN } else { 20 };
    match rng.below(6) {
        // Cut short (test_run wants a whole fixed IPv4 / IPv6 header).
        0 => {
            let len = ETH_HLEN + hlen + rng.below((p.len() - ETH_HLEN - hlen) as u64) as usize;
            p.truncate(len);
        }
        // Flip bytes of the headers.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let end = p.len().min(ETH_HLEN + hlen + 60);
                let i = ETH_HLEN + rng.below((end - ETH_HLEN) as u64) as usize;
                p[i] ^= 1 << rng.below(8);
            }
        }
        2..=4 if v6 => mutate6(rng, &mut p),
        // Another IHL: options that are not there, or a header cut inside.
        2 => p[ETH_HLEN] = 0x40 | rng.below(16) as u8,
        // Another total length.
        3 => {
            let len = rng.below(0x10000) as u16;
            p[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&len.to_be_bytes());
        }
        // Another flags/fragment word.
        4 => {
            let f = rng.below(0x10000) as u16;
            p[ETH_HLEN + 6..ETH_HLEN + 8].copy_from_slice(&f.to_be_bytes());
        }
        // Random bytes from somewhere past the IP header.
        _ => {
            let from = ETH_HLEN + hlen + rng.below((p.len() - ETH_HLEN - hlen) as u64) as usize;
            let noise = rng.bytes(p.len() - from);
            p[from..].copy_from_slice(&noise);
        }
    }
    // Half the time the checksums are made right again, so that a packet
    // that looks valid in every way still reaches the rewrite paths.
    if rng.below(2) == 0 && v6 && checks(&p).0 {
        let total = ip_total_len(&p);
        match walk6(&p) {
            Some((PROTO_TCP, off, false)) if total >= off + 20 => fix_l4_csum(&mut p),
            Some((PROTO_UDP, off, false)) if total >= off + 8 => fix_l4_csum(&mut p),
            Some((PROTO_ICMPV6, off, false)) if total >= off + 8 => fix_icmp_csum(&mut p),
            _ => {}
        }
    } else if rng.below(2) == 0 && !v6 && checks(&p) != (false, false) {
        fix_ip_csum(&mut p);
        let frag = u16::from_be_bytes([p[ETH_HLEN + 6], p[ETH_HLEN + 7]]) & 0x3fff != 0;
        if !frag && matches!(ip_proto(&p), PROTO_TCP | PROTO_UDP) && checks(&p).0 {
            let hl = ihl(&p);
            let need = if ip_proto(&p) == PROTO_TCP { 20 } else { 8 };
            if ip_total_len(&p) >= hl + need {
                fix_l4_csum(&mut p);
            }
        }
    }
    p
}

fn mutated_packets_come_out_untouched_or_translated_with_right_checksums<F: Fam>(test: &str) {
    if datapath::<F>(test).is_none() {
        return;
    }
    let ns = common::Netns::new(format!("pft-{}-dp-fuzz{}", std::process::id(), F::NAME));
    let test = test.to_string();
    common::in_netns(&ns.name, move || {
        let mut dp = standard::<F>(&test).expect("a datapath");
        flows(&mut dp);
        let seeds = seeds::<F>();
        let mut rng = Rng(0xf00d_5eed_0000_0015);
        let (mut untouched, mut translated) = (0, 0);
        let rounds = 6000;
        for i in 0..rounds {
            let (name, prog, seed) = &seeds[rng.below(seeds.len() as u64) as usize];
            let pkt = if rng.below(8) == 0 {
                seed.clone()
            } else {
                mutate(&mut rng, seed)
            };
            let Some(run) = dp.try_run(prog, &pkt) else {
                continue;
            };
            let what = format!("#{i}, {name} via {prog}: {pkt:02x?}");
            match run.verdict {
                TC_ACT_OK => {
                    assert_eq!(run.out, pkt, "{what}: passed on, but changed");
                    untouched += 1;
                }
                TC_ACT_REDIRECT => {
                    let (ip_in, l4_in) = checks(&pkt);
                    let (ip_out, l4_out) = checks(&run.out);
                    assert!(
                        ip_out || !ip_in,
                        "{what}: the IPv4 checksum verified (IPv6: the headers were whole) before, not after\n out: {:02x?}",
                        run.out
                    );
                    assert!(
                        l4_out || !l4_in,
                        "{what}: the L4/ICMP checksum verified before, not after\n out: {:02x?}",
                        run.out
                    );
                    translated += 1;
                }
                TC_ACT_SHOT | TC_ACT_STOLEN => {}
                v => panic!("{what}: verdict {v}"),
            }
        }
        assert!(
            untouched > rounds / 10 && translated > rounds / 10,
            "the fuzz must reach both outcomes often: {untouched} untouched, {translated} translated of {rounds}"
        );
    });
}

crate::both!(mutated_packets_come_out_untouched_or_translated_with_right_checksums);
