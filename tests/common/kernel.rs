//! What the kernel holds: the programs on an interface's TCX ingress and on
//! a cgroup's socket hooks.
use std::fs::File;

use super::in_netns;

/// The ids of the TCX ingress programs on `iface` in namespace `ns`.
pub fn tcx_ingress_programs(ns: &str, iface: &str) -> Vec<u32> {
    let iface = iface.to_string();
    in_netns(ns, move || match aya::programs::SchedClassifier::query_tcx(
        &iface,
        aya::programs::TcAttachType::Ingress,
    ) {
        Ok((_, progs)) => progs.iter().map(|p| p.id()).collect(),
        Err(e) => panic!("query tcx on {iface}: {e}"),
    })
}

/// How many programs of an attach type `cgroup` holds itself (not
/// inherited); aya 0.14 has no public query for cgroup sock_addr programs.
pub fn cgroup_prog_count(cgroup: &std::path::Path, attach_type: u32) -> u32 {
    use std::os::fd::AsFd as _;
    let dir = File::open(cgroup).unwrap_or_else(|e| panic!("open {}: {e}", cgroup.display()));
    portfwd_sys::prog_query_count(dir.as_fd(), attach_type)
        .unwrap_or_else(|e| panic!("BPF_PROG_QUERY on {}: {e}", cgroup.display()))
}

/// Programs attached to `cgroup` per hook, both families, in a fixed order.
pub fn cgroup_hooks(cgroup: &std::path::Path) -> Vec<(&'static str, u32)> {
    [
        ("bind4", portfwd_sys::BPF_CGROUP_INET4_BIND),
        ("connect4", portfwd_sys::BPF_CGROUP_INET4_CONNECT),
        ("sendmsg4", portfwd_sys::BPF_CGROUP_UDP4_SENDMSG),
        ("recvmsg4", portfwd_sys::BPF_CGROUP_UDP4_RECVMSG),
        ("getpeername4", portfwd_sys::BPF_CGROUP_INET4_GETPEERNAME),
        ("bind6", portfwd_sys::BPF_CGROUP_INET6_BIND),
        ("connect6", portfwd_sys::BPF_CGROUP_INET6_CONNECT),
        ("sendmsg6", portfwd_sys::BPF_CGROUP_UDP6_SENDMSG),
        ("recvmsg6", portfwd_sys::BPF_CGROUP_UDP6_RECVMSG),
        ("getpeername6", portfwd_sys::BPF_CGROUP_INET6_GETPEERNAME),
    ]
    .into_iter()
    .map(|(name, t)| (name, cgroup_prog_count(cgroup, t)))
    .collect()
}

/// What `cgroup_hooks` must say with `bind` programs on each family's bind
/// hook and `local` on each of the others.
pub fn hooks(bind: u32, local: u32) -> Vec<(&'static str, u32)> {
    vec![
        ("bind4", bind),
        ("connect4", local),
        ("sendmsg4", local),
        ("recvmsg4", local),
        ("getpeername4", local),
        ("bind6", bind),
        ("connect6", local),
        ("sendmsg6", local),
        ("recvmsg6", local),
        ("getpeername6", local),
    ]
}

/// Asserts that nothing portfwd made for a namespace is left: no state
/// directory `dir`, no program on any socket hook of `cgroup`.
pub fn assert_nothing_left(dir: &std::path::Path, cgroup: &std::path::Path, what: &str) {
    assert!(
        !dir.exists(),
        "{what}: state left behind in {}",
        dir.display()
    );
    assert_eq!(
        cgroup_hooks(cgroup),
        hooks(0, 0),
        "{what}: programs left on {}",
        cgroup.display()
    );
}

/// Writes `version` as the layout version of the maps pinned in `dir`, as a
/// portfwd of another layout would have left them.
pub fn set_pinned_layout(dir: &std::path::Path, version: u64) {
    let meta = aya::maps::MapData::from_pin(dir.join(portfwd_common::MAP_META))
        .expect("opening the pinned pf_meta");
    let mut meta: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(meta)).expect("pf_meta is an array");
    meta.set(portfwd_common::META_LAYOUT, version, 0)
        .expect("writing pf_meta");
}
