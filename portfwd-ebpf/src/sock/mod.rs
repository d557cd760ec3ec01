//! The socket side, apart from the packet path: cgroup sock_addr hooks for
//! the host's own clients and for keeping host processes off published ports.
pub mod addr;
