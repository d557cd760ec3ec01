//! The datapath under test: a private copy of the eBPF object, its maps
//! filled the way userspace would, and the fixture every test starts from,
//! for either family: `Fam` names each family's addresses and SPECs, and
//! `both!` runs a test body written once over `Fam` as an IPv4 and an IPv6
//! test.
use std::{
    marker::PhantomData,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use aya::{
    programs::{TestRun, TestRunOptions},
    Ebpf,
};
use portfwd::{
    datapath::{self, Maps},
    family::Family,
    spec::Spec,
};
use portfwd_common::{CtEntry, CtKey, PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS};
pub use portfwd_common::{V4, V6};

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

pub fn ep(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}

/// An address as the family's maps hold it.
pub fn be<F: Family>(addr: impl Into<IpAddr>) -> F {
    let addr = addr.into();
    F::from_ip(addr).unwrap_or_else(|| panic!("test bug: {addr} is not of the family"))
}

/// A family as the tests see it: the addresses and SPECs of the standard
/// fixture (the IPv4 ones are the plain constants above), and what differs
/// in the family's ICMP.
pub trait Fam: Family {
    const NAME: &'static str;
    const CLIENT: IpAddr;
    const OTHER_CLIENT: IpAddr;
    const HOST: IpAddr;
    const HOST2: IpAddr;
    const ELSEWHERE: IpAddr;
    const CONTAINER: IpAddr;
    const DNS_CONTAINER: IpAddr;
    const OTHER_CONTAINER: IpAddr;
    /// Another container on the bridge (a hairpin client).
    const NEIGHBOUR: IpAddr;
    /// A router between the host and its clients.
    const ROUTER: IpAddr;
    const WEB_SPEC: &'static str;
    const DNS_SPEC: &'static str;
    /// `9090=OTHER_CONTAINER:90`.
    const OTHER_SPEC: &'static str;
    /// `HOST:8080=CONTAINER:80`.
    const HOST_ONLY_SPEC: &'static str;
    /// `8080=OTHER_CONTAINER:81`.
    const MOVED_SPEC: &'static str;
    /// ICMP (ICMPv6) type and code of "port unreachable".
    const PORT_UNREACH: (u8, u8);
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// Type, code and bytes 4..8 of "fragmentation needed" ("packet too
    /// big") for `mtu`.
    fn too_big(mtu: u16) -> (u8, u8, [u8; 4]);
}

impl Fam for V4 {
    const NAME: &'static str = "IPv4";
    const CLIENT: IpAddr = IpAddr::V4(CLIENT);
    const OTHER_CLIENT: IpAddr = IpAddr::V4(OTHER_CLIENT);
    const HOST: IpAddr = IpAddr::V4(HOST);
    const HOST2: IpAddr = IpAddr::V4(HOST2);
    const ELSEWHERE: IpAddr = IpAddr::V4(ELSEWHERE);
    const CONTAINER: IpAddr = IpAddr::V4(CONTAINER);
    const DNS_CONTAINER: IpAddr = IpAddr::V4(DNS_CONTAINER);
    const OTHER_CONTAINER: IpAddr = IpAddr::V4(OTHER_CONTAINER);
    const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(172, 30, 0, 7));
    const ROUTER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    const WEB_SPEC: &'static str = WEB_SPEC;
    const DNS_SPEC: &'static str = DNS_SPEC;
    const OTHER_SPEC: &'static str = "9090=172.30.0.9:90";
    const HOST_ONLY_SPEC: &'static str = "10.0.1.1:8080=172.30.0.2:80";
    const MOVED_SPEC: &'static str = "8080=172.30.0.9:81";
    const PORT_UNREACH: (u8, u8) = (3, 3);
    const ECHO_REQUEST: u8 = 8;
    const ECHO_REPLY: u8 = 0;
    fn too_big(mtu: u16) -> (u8, u8, [u8; 4]) {
        let [hi, lo] = mtu.to_be_bytes();
        (3, 4, [0, 0, hi, lo])
    }
}

/// An IPv6 address from its eight 16-bit groups, for constants.
pub const fn v6(segments: [u16; 8]) -> IpAddr {
    let [a, b, c, d, e, f, g, h] = segments;
    IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h))
}

impl Fam for V6 {
    const NAME: &'static str = "IPv6";
    const CLIENT: IpAddr = v6([0x2001, 0xdb8, 0x113, 0, 0, 0, 0, 7]);
    const OTHER_CLIENT: IpAddr = v6([0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x23]);
    const HOST: IpAddr = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 1]);
    const HOST2: IpAddr = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 5]);
    const ELSEWHERE: IpAddr = v6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x99]);
    const CONTAINER: IpAddr = v6([0xfd00, 0x30, 0, 0, 0, 0, 0, 2]);
    const DNS_CONTAINER: IpAddr = v6([0xfd00, 0x30, 0, 0, 0, 0, 0, 3]);
    const OTHER_CONTAINER: IpAddr = v6([0xfd00, 0x30, 0, 0, 0, 0, 0, 9]);
    const NEIGHBOUR: IpAddr = v6([0xfd00, 0x30, 0, 0, 0, 0, 0, 7]);
    const ROUTER: IpAddr = v6([0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1]);
    const WEB_SPEC: &'static str = "8080=[fd00:30::2]:80";
    const DNS_SPEC: &'static str = "5353=[fd00:30::3]:53/udp";
    const OTHER_SPEC: &'static str = "9090=[fd00:30::9]:90";
    const HOST_ONLY_SPEC: &'static str = "[2001:db8:1::1]:8080=[fd00:30::2]:80";
    const MOVED_SPEC: &'static str = "8080=[fd00:30::9]:81";
    const PORT_UNREACH: (u8, u8) = (1, 4);
    const ECHO_REQUEST: u8 = 128;
    const ECHO_REPLY: u8 = 129;
    fn too_big(mtu: u16) -> (u8, u8, [u8; 4]) {
        (2, 0, u32::from(mtu).to_be_bytes())
    }
}

/// Two #[test]s, `NAME::v4` and `NAME::v6`, running the body `NAME::<F>`
/// (a `fn NAME<F: Fam>(test: &str)` in the calling module) for each family.
#[macro_export]
macro_rules! both {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn v4() {
                super::$name::<portfwd_common::V4>(concat!(stringify!($name), "::v4"));
            }
            #[test]
            fn v6() {
                super::$name::<portfwd_common::V6>(concat!(stringify!($name), "::v6"));
            }
        }
    )+};
}

// ---------------------------------------------------------------------------
// The datapath under test.
// ---------------------------------------------------------------------------

/// A loaded datapath, seen through family `F`'s maps (the programs serve
/// both families).
pub struct Datapath<F: Fam = V4> {
    pub maps: Maps,
    // The programs; kept alive with the maps they were loaded with.
    pub ebpf: Ebpf,
    family: PhantomData<F>,
}

/// What a program did with a packet.
pub struct Run {
    pub verdict: u32,
    pub out: Vec<u8>,
}

/// A fresh datapath, or None if this machine cannot run BPF programs (and
/// this is not CI).
pub fn datapath<F: Fam>(test: &str) -> Option<Datapath<F>> {
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
    Some(Datapath {
        maps,
        ebpf,
        family: PhantomData,
    })
}

/// The usual setup: two host addresses, a TCP and a UDP wildcard mapping,
/// all of family `F`.
pub fn standard<F: Fam>(test: &str) -> Option<Datapath<F>> {
    let mut dp = datapath::<F>(test)?;
    dp.local(F::HOST);
    dp.local(F::HOST2);
    dp.publish(F::WEB_SPEC);
    dp.publish(F::DNS_SPEC);
    Some(dp)
}

impl<F: Fam> Datapath<F> {
    pub fn local(&mut self, addr: impl Into<IpAddr>) {
        F::maps_mut(&mut self.maps)
            .local_addrs
            .insert(be::<F>(addr), EXT_IFINDEX, 0)
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
            F::maps_mut(&mut self.maps)
                .mappings
                .remove(&m.host.key::<F>().expect("a SPEC of the family"))
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

    /// The drop counters that are not zero.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        self.maps
            .counters()
            .into_iter()
            .filter(|(n, v)| n.starts_with("drop_") && *v != 0)
            .collect()
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.maps
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no counter named {name}"))
            .1
    }

    pub fn ct(&self, key: &CtKey<F>) -> Option<CtEntry<F>> {
        F::maps(&self.maps).conntrack.get(key, 0).ok()
    }

    pub fn ct_entries(&self) -> Vec<(CtKey<F>, CtEntry<F>)> {
        F::maps(&self.maps)
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

pub fn ct_key<F: Family>(src: SocketAddr, dst: SocketAddr, proto: u8) -> CtKey<F> {
    CtKey::new(
        be(src.ip()),
        be(dst.ip()),
        src.port().to_be(),
        dst.port().to_be(),
        proto,
    )
}
