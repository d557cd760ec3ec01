//! The host as portfwd finds it: interfaces and addresses, routes, netlink, network
//! namespaces, the cgroup2 and BPF filesystems, who holds a port, and whether
//! the process may act at all.
pub mod bpffs;
pub mod cgroup;
pub mod ifaces;
pub mod netlink;
pub mod netns;
pub mod privileges;
pub mod procnet;
pub mod routes;
