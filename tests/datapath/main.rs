//! The TC programs, run for real in the kernel with BPF_PROG_TEST_RUN.
//!
//! Nothing is attached and no packet reaches a network: each test loads its
//! own copy of the eBPF object (private, unpinned maps), fills the maps the way
//! userspace would, hands hand-built Ethernet frames to `pf_ext_in` (DNAT) and
//! `pf_br_in` (reverse NAT) and checks the verdict, the bytes that come out,
//! the conntrack entries and the counters. One file per path, over a shared
//! packet builder (`packet`) and harness (`harness`); a test whose behaviour
//! is the same in both families is one body over `harness::Fam`, run by
//! `both!` as `NAME::v4` and `NAME::v6`, and `v6` holds what only IPv6 has.
//!
//! Under test_run `bpf_redirect_neigh` only records the target and returns
//! TC_ACT_REDIRECT, and the skb's device is the loopback (ifindex 1).
//!
//! The tests need root (BPF). Without it they are skipped, unless CI=true,
//! where that is a failure.

#[path = "../common/mod.rs"]
mod common;

mod harness;
mod packet;

mod dnat;
mod frag;
mod fuzz;
mod hairpin;
mod icmp;
mod mtu;
mod rnat;
mod v6;
