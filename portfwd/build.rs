//! Builds the eBPF object (portfwd-ebpf, for the BPF target) with aya-build
//! and leaves it in OUT_DIR for `include_bytes_aligned!`.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    // `cargo xtask setup` exports PORTFWD_EBPF_TOOLCHAIN=stable (with
    // RUSTC_BOOTSTRAP=1) on machines without a nightly toolchain.
    println!("cargo:rerun-if-env-changed=PORTFWD_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("PORTFWD_EBPF_TOOLCHAIN").ok();
    let toolchain = match toolchain.as_deref() {
        Some(t) if !t.is_empty() => aya_build::Toolchain::Custom(t),
        _ => aya_build::Toolchain::Nightly,
    };
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("../portfwd-ebpf");
    let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "portfwd-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        toolchain,
    )
}
