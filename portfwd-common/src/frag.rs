//! IP fragment tracking: the ports of a fragmented datagram are only in its
//! first fragment, so the first one records them for the rest, keyed by the
//! datagram's identity as on the wire. Fragments that arrive before their
//! first one wait in `pf_fragq4` until it comes, and are then sent through
//! the program again.
use crate::addr::{V4, V6};

/// Key of `pf_frag4` (with `slot` 0) and `pf_fragq4` (`slot` 1 ..=
/// `FRAG_QUEUE_SLOTS`): one datagram (source, destination, IP id, protocol).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    /// The IP identification (IPv4: 16 bits, zero-extended).
    pub id_be: u32,
    pub proto: u8,
    pub slot: u8,
    pub pad: u16,
}

/// `FragEntry::state`: the first fragment has come; its ports are in the entry.
pub const FRAG_PORTS: u8 = 1;
/// Fragments came before the first one and wait in `pf_fragq4`.
pub const FRAG_QUEUED: u8 = 2;
/// The datagram is not portfwd's: its fragments go to the host as they are.
pub const FRAG_PASS: u8 = 3;

/// How many early fragments of one datagram may wait for its first.
pub const FRAG_QUEUE_SLOTS: u8 = 6;
/// The most of one waiting fragment kept (its IP header and payload).
pub const FRAG_QUEUE_BYTES: usize = 1520;
/// How long a datagram's fragments are tracked after the last one (the
/// kernel's ipfrag_time).
pub const FRAG_LIFETIME_NS: u64 = 30 * 1_000_000_000;

/// Value of `pf_frag4`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragEntry {
    pub expires_ns: u64,
    pub sport_be: u16,
    pub dport_be: u16,
    /// `FRAG_*`.
    pub state: u8,
    /// Early fragments waiting in `pf_fragq4` (slots 1 ..= queued).
    pub queued: u8,
    pub pad: u16,
}

/// Value of `pf_fragq4`: a fragment waiting for its datagram's first one,
/// from its L3 header on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragQueued {
    pub len: u16,
    pub pad: [u8; 6],
    pub data: [u8; FRAG_QUEUE_BYTES],
}

crate::assert_layout!(FragKey<V4> = V4, V4, u32, u8, u8, u16; 16);
crate::assert_layout!(FragKey<V6> = V6, V6, u32, u8, u8, u16; 40);
crate::assert_layout!(FragEntry = u64, u16, u16, u8, u8, u16; 16);
crate::assert_layout!(FragQueued = u16, [u8; 6], [u8; FRAG_QUEUE_BYTES]; 1528);
