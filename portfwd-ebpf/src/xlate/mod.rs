//! Leaf transforms: each rewrites a packet one way and never calls another.
//! The orchestrators in `hooks` decide which one applies.
pub mod dnat;
pub mod frag;
pub mod hairpin;
pub mod icmp;
pub mod reset;
pub mod rnat;
