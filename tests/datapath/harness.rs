//! The datapath under test: a private copy of the eBPF object, its maps
//! filled the way userspace would, and the fixture every test starts from.
use std::net::{Ipv4Addr, SocketAddrV4};

use aya::{
    programs::{TestRun, TestRunOptions},
    Ebpf,
};
use portfwd::{
    datapath::{self, Maps},
    spec::Spec,
};
use portfwd_common::{CtEntry, CtKey, PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS, V4};

pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_STOLEN: u32 = 4;
pub const TC_ACT_REDIRECT: u32 = 7;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const PROTO_ICMP: u8 = 1;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 flags/fragment-offset word.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
pub const OTHER_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 23);
/// Two of the host's addresses (both in pf_local).
pub const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const HOST2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 5);
/// An address that is not the host's.
pub const ELSEWHERE: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
pub const CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 2);
pub const DNS_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 3);
pub const OTHER_CONTAINER: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 9);

/// The bridge the mappings point at (redirect_neigh is not carried out
/// under test_run, so it need not exist).
pub const BRIDGE_IFINDEX: u32 = 42;
/// The value stored with the host's addresses in pf_local.
pub const EXT_IFINDEX: u32 = 2;
/// The device of a test_run skb: the loopback.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// The published ports of the standard fixture.
pub const WEB_SPEC: &str = "8080=172.30.0.2:80";
pub const DNS_SPEC: &str = "5353=172.30.0.3:53/udp";

pub fn ep(addr: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(addr, port)
}

pub fn be(addr: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(addr.octets())
}

// ---------------------------------------------------------------------------
// The datapath under test.
// ---------------------------------------------------------------------------

pub struct Datapath {
    pub maps: Maps,
    // The programs; kept alive with the maps they were loaded with.
    pub ebpf: Ebpf,
}

/// What a program did with a packet.
pub struct Run {
    pub verdict: u32,
    pub out: Vec<u8>,
}

/// A fresh datapath, or None if this machine cannot run BPF programs (and
/// this is not CI).
pub fn datapath(test: &str) -> Option<Datapath> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: the datapath tests need root (BPF_PROG_TEST_RUN) and CI=true forbids skipping them");
        }
        eprintln!("SKIPPED {test}: the datapath tests need root (BPF_PROG_TEST_RUN)");
        return None;
    }
    let mut ebpf =
        datapath::load(None).expect("loading the eBPF object and verifying its programs");
    let maps = Maps::take(&mut ebpf).expect("taking the maps out of the eBPF object");
    Some(Datapath { maps, ebpf })
}

/// The usual setup: two host addresses, a TCP and a UDP wildcard mapping.
pub fn standard(test: &str) -> Option<Datapath> {
    let mut dp = datapath(test)?;
    dp.local(HOST);
    dp.local(HOST2);
    dp.publish(WEB_SPEC);
    dp.publish(DNS_SPEC);
    Some(dp)
}

impl Datapath {
    pub fn local(&mut self, addr: Ipv4Addr) {
        self.maps
            .v4
            .local_addrs
            .insert(be(addr), EXT_IFINDEX, 0)
            .expect("inserting into pf_local");
    }

    pub fn publish(&mut self, spec: &str) {
        self.publish_on(spec, BRIDGE_IFINDEX);
    }

    /// Publishes `spec` on the bridge `ifindex`.
    pub fn publish_on(&mut self, spec: &str, ifindex: u32) {
        let spec: Spec = spec.parse().expect("a valid SPEC");
        portfwd::table::add(&mut self.maps, &spec.mappings, ifindex, true)
            .expect("adding to the mapping table as userspace does");
    }

    pub fn unpublish(&mut self, spec: &str) {
        let spec: Spec = spec.parse().expect("a valid SPEC");
        for m in &spec.mappings {
            self.maps
                .v4
                .mappings
                .remove(&m.host.key::<V4>().expect("an IPv4 SPEC"))
                .expect("removing from pf_map");
        }
    }

    /// Runs `prog` on `pkt`. None if the kernel refused to build an skb
    /// from a frame too short for the network header its ethertype names
    /// (test_run wants a whole IPv4 or IPv6 header), so the program never ran.
    pub fn try_run(&mut self, prog: &str, pkt: &[u8]) -> Option<Run> {
        self.try_run_on(prog, pkt, 0)
    }

    /// As `try_run`, the skb on device `ifindex` (0: the loopback), which
    /// must exist in the calling thread's network namespace.
    pub fn try_run_on(&mut self, prog: &str, pkt: &[u8], ifindex: u32) -> Option<Run> {
        let mut out = vec![0u8; pkt.len() + 256];
        // struct __sk_buff: the kernel takes `ifindex` (offset 40) from it
        // and wants the fields it does not take zeroed.
        let mut ctx = [0u8; 192];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let res = datapath::classifier(&mut self.ebpf, prog)
            .expect("the classifier is in the object")
            .test_run(TestRunOptions {
                data_in: Some(pkt),
                data_out: Some(&mut out),
                ctx_in: (ifindex != 0).then_some(&ctx[..]),
                ..Default::default()
            });
        match res {
            Ok(res) => {
                out.truncate(res.data_size_out as usize);
                Some(Run {
                    verdict: res.return_value,
                    out,
                })
            }
            Err(_) if too_short_for_test_run(pkt) => None,
            Err(e) => panic!("BPF_PROG_TEST_RUN of {prog} on {} bytes: {e:?}", pkt.len()),
        }
    }

    pub fn run(&mut self, prog: &str, pkt: &[u8]) -> Run {
        self.try_run(prog, pkt).unwrap_or_else(|| {
            panic!(
                "BPF_PROG_TEST_RUN of {prog} refused a {}-byte frame",
                pkt.len()
            )
        })
    }

    /// `run` with the skb on device `ifindex` (see `try_run_on`).
    pub fn run_on(&mut self, prog: &str, pkt: &[u8], ifindex: u32) -> Run {
        self.try_run_on(prog, pkt, ifindex).unwrap_or_else(|| {
            panic!(
                "BPF_PROG_TEST_RUN of {prog} refused a {}-byte frame",
                pkt.len()
            )
        })
    }

    /// A packet arriving on an external interface.
    pub fn ext(&mut self, pkt: &[u8]) -> Run {
        self.run(PROG_EXTERNAL_INGRESS, pkt)
    }

    /// A packet arriving from the bridge.
    pub fn br(&mut self, pkt: &[u8]) -> Run {
        self.run(PROG_BRIDGE_INGRESS, pkt)
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.maps
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no counter named {name}"))
            .1
    }

    pub fn ct(&self, key: &CtKey<V4>) -> Option<CtEntry<V4>> {
        self.maps.v4.conntrack.get(key, 0).ok()
    }

    pub fn ct_entries(&self) -> Vec<(CtKey<V4>, CtEntry<V4>)> {
        self.maps
            .v4
            .conntrack
            .iter()
            .map(|r| r.expect("iterating pf_ct"))
            .collect()
    }
}

/// True for frames BPF_PROG_TEST_RUN may refuse (EINVAL) before running the
/// program: IPv4 or IPv6 ethertype without a whole fixed network header.
pub fn too_short_for_test_run(pkt: &[u8]) -> bool {
    match u16::from_be_bytes([pkt[12], pkt[13]]) {
        ETH_P_IP => pkt.len() < ETH_HLEN + 20,
        ETH_P_IPV6 => pkt.len() < ETH_HLEN + 40,
        _ => false,
    }
}

pub fn ct_key(src: SocketAddrV4, dst: SocketAddrV4, proto: u8) -> CtKey<V4> {
    CtKey {
        saddr_be: be(*src.ip()),
        daddr_be: be(*dst.ip()),
        sport_be: src.port().to_be(),
        dport_be: dst.port().to_be(),
        proto,
        pad: [0; 3],
    }
}
