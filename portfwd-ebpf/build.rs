//! Fails early, with the fix, when bpf-linker is missing: without it rustc's
//! error for the BPF target is hard to read.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    if which::which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` to install it"
        );
    }
}
