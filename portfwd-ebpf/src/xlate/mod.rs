//! Leaf transforms: each rewrites a packet one way and never calls another.
//! The orchestrators in `hooks` decide which one applies.
pub mod dnat;
pub mod hairpin;
pub mod reset;
pub mod rnat;
