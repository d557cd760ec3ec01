//! Host-side stub so that `portfwd` can name this crate as a build dependency
//! (cargo then rebuilds portfwd when the eBPF sources change). The programs
//! themselves are in `main.rs`, built for the BPF target by aya-build.
#![no_std]
