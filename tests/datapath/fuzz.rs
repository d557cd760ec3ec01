//! A packet fuzz of both entry points: valid packets of live flows (TCP,
//! UDP, ICMP errors, fragments, hairpin), mutated at random (cut short, bytes
//! flipped, IHL, lengths and fragment fields made up, checksums sometimes
//! fixed up afterwards). Whatever comes out is either the packet untouched or
//! a packet whose checksums verify wherever the input's did. Runs in a
//! namespace of its own: early fragments may be replayed into its loopback.
use portfwd_common::{PROTO_TCP, PROTO_UDP};

use crate::{common, harness::*, packet::*};

/// Seeds: packets that reach every path with the flows `flows` sets up.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let ext = portfwd_common::PROG_EXTERNAL_INGRESS;
    let br = portfwd_common::PROG_BRIDGE_INGRESS;
    let client = ep(CLIENT, 45_000);
    let uclient = ep(CLIENT, 45_001);
    let host = ep(HOST, 8080);
    let container = ep(CONTAINER, 80);
    let dns = ep(DNS_CONTAINER, 53);
    let big = udp_with(
        &Ip::new(CLIENT, HOST, PROTO_UDP).id(0x7777),
        uclient.port(),
        5353,
        &[0x42; 2000],
    );
    let frags = fragments(&big, &[1480], 0x7777);
    let reply = tcp(ep(HOST, 8080), client, TCP_ACK);
    vec![
        ("syn", ext, tcp(ep(CLIENT, 45_100), host, TCP_SYN)),
        (
            "ack",
            ext,
            tcp_with(
                &Ip::new(CLIENT, HOST, PROTO_TCP),
                client.port(),
                8080,
                TCP_ACK,
                b"data",
            ),
        ),
        ("udp", ext, udp(uclient, ep(HOST, 5353), b"query")),
        (
            "reply",
            br,
            tcp_with(
                &Ip::new(CONTAINER, CLIENT, PROTO_TCP),
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
            tcp(ep(OTHER_CONTAINER, 45_200), host, TCP_SYN),
        ),
        (
            "icmp in",
            ext,
            icmp_error(CLIENT, HOST, 3, 3, [0; 4], l3(&reply)),
        ),
        (
            "icmp out",
            br,
            icmp_error(
                CONTAINER,
                CLIENT,
                3,
                3,
                [0; 4],
                l3(&tcp(client, container, TCP_ACK)),
            ),
        ),
        ("first fragment", ext, frags[0].clone()),
        ("last fragment", ext, frags[1].clone()),
    ]
}

fn flows(dp: &mut Datapath) {
    let client = ep(CLIENT, 45_000);
    dp.ext(&tcp(client, ep(HOST, 8080), TCP_SYN));
    dp.br(&tcp(ep(CONTAINER, 80), client, TCP_SYN | TCP_ACK));
    dp.ext(&tcp(client, ep(HOST, 8080), TCP_ACK));
    dp.ext(&udp(ep(CLIENT, 45_001), ep(HOST, 5353), b"q"));
}

/// The checksums of `p` that verify: (IPv4 header, L4 or ICMP).
fn checks(p: &[u8]) -> (bool, bool) {
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

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut p = seed.to_vec();
    match rng.below(6) {
        // Cut short (test_run wants a whole fixed IPv4 header).
        0 => {
            let len = ETH_HLEN + 20 + rng.below((p.len() - ETH_HLEN - 20) as u64) as usize;
            p.truncate(len);
        }
        // Flip bytes of the headers.
        1 => {
            for _ in 0..1 + rng.below(4) {
                let end = p.len().min(ETH_HLEN + 80);
                let i = ETH_HLEN + rng.below((end - ETH_HLEN) as u64) as usize;
                p[i] ^= 1 << rng.below(8);
            }
        }
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
            let from = ETH_HLEN + 20 + rng.below((p.len() - ETH_HLEN - 20) as u64) as usize;
            let noise = rng.bytes(p.len() - from);
            p[from..].copy_from_slice(&noise);
        }
    }
    // Half the time the checksums are made right again, so that a packet
    // that looks valid in every way still reaches the rewrite paths.
    if rng.below(2) == 0 && checks(&p) != (false, false) {
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

#[test]
fn mutated_packets_come_out_untouched_or_translated_with_right_checksums() {
    if datapath::<V4>("mutated_packets_come_out_untouched_or_translated_with_right_checksums")
        .is_none()
    {
        return;
    }
    let ns = common::Netns::new(format!("pft-{}-dp-fuzz", std::process::id()));
    common::in_netns(&ns.name, || {
        let mut dp =
            standard::<V4>("mutated_packets_come_out_untouched_or_translated_with_right_checksums")
                .expect("a datapath");
        flows(&mut dp);
        let seeds = seeds();
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
                        "{what}: the IPv4 checksum verified before, not after\n out: {:02x?}",
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
