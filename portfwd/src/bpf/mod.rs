//! The eBPF side as userspace sees it: loading the object (`load`),
//! attaching its programs through pinned links (`links`) and typed access to
//! its maps (`maps`), the attached programs' run statistics (`stats`). The raw bpf(2) calls aya lacks are in portfwd-sys.
pub mod links;
pub mod load;
pub mod maps;
pub mod stats;

pub use links::{attach_cgroup_pinned, attach_pinned, detach_pinned};
pub use load::{classifier, load, sock_addr, BIND_PROGRAMS, LOCAL_PROGRAMS};
pub use maps::{recorded_netns_inode, FamilyMaps, Maps};
pub use stats::{attached_programs, stats_enabled, ProgramStats};
