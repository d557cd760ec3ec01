//! portfwd's userspace as a library: the operations (`ops`) with typed
//! results for every front end (the CLI in main.rs and cli/), over the eBPF
//! side (`bpf`), the host (`host`), Docker (`docker`), SPECs (`spec`), the
//! mapping table (`table`), the pinned state (`state`) and what survives a
//! reboot (`persist`).
pub mod bpf;
pub mod docker;
pub mod error;
pub mod family;
pub mod host;
pub mod ops;
pub mod persist;
pub mod relay;
pub mod relayed;
pub mod spec;
pub mod state;
pub mod table;

pub use error::Error;

/// The old name of `bpf`, kept while tests/datapath (the kernel side's
/// suite, being rewritten) still imports `portfwd::datapath`.
pub use bpf as datapath;

/// The eBPF object built from `portfwd-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd"));
