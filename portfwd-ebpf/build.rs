//! Fails early, with the fix, when bpf-linker is missing: without it rustc's
//! error for the BPF target is hard to read. Sets bpf-linker's options.
fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    // bpf-linker passes LLVM -bpf-expand-memcpy-in-order by default, which
    // leaves every memset (a struct's `Default`, a key's zero padding) to a
    // call into compiler_builtins' byte-at-a-time loop: 80-90 calls in the
    // object, about 60 bytes stored one by one on every packet. Without it
    // LLVM writes them inline, a word at a time.
    println!("cargo:rustc-link-arg=--disable-expand-memcpy-in-order");
    if which::which("bpf-linker").is_err() {
        println!(
            "cargo:warning=bpf-linker not found on PATH; run `cargo xtask setup` to install it"
        );
    }
}
