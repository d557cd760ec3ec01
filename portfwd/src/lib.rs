//! portfwd's userspace: the loader and the pieces the CLI is made of, one
//! file per concern and one file per subcommand (`cmd/`).
pub mod bpf;
pub mod docker;
pub mod error;
pub mod host;
pub mod ops;
pub mod spec;
pub mod state;
pub mod table;

pub use error::Error;

/// The old name of `bpf`, kept while tests/datapath (the kernel side's
/// suite, being rewritten) still imports `portfwd::datapath`.
pub use bpf as datapath;

/// The eBPF object built from `portfwd-ebpf` by build.rs.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd"));
