//! BPF conntrack layouts: two entries per flow, one per direction, in an
//! LRU hash per family.
use crate::addr::{Addr, V4, V6};

/// Key of `pf_ct4` / `pf_ct6`: a 5-tuple as seen on the wire in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

impl<A: Addr> CtKey<A> {
    #[inline(always)]
    pub fn new(saddr_be: A, daddr_be: A, sport_be: u16, dport_be: u16, proto: u8) -> Self {
        Self {
            saddr_be,
            daddr_be,
            sport_be,
            dport_be,
            proto,
            pad: [0; 3],
        }
    }

    /// The same flow seen from the other end.
    #[inline(always)]
    pub fn reversed(&self) -> Self {
        Self::new(
            self.daddr_be,
            self.saddr_be,
            self.dport_be,
            self.sport_be,
            self.proto,
        )
    }
}

/// `CtEntry::dir`: the entry for packets from the client toward the host port.
pub const CT_DIR_FORWARD: u8 = 1;
/// `CtEntry::dir`: the entry for replies from the container toward the client.
pub const CT_DIR_REPLY: u8 = 2;

/// `CtEntry::flags` bits.
pub const CT_F_SYN: u8 = 1 << 0;
pub const CT_F_FIN: u8 = 1 << 1;
pub const CT_F_RST: u8 = 1 << 2;
pub const CT_F_ACK: u8 = 1 << 3;
/// On a reply entry: both ends have sent FIN and the container's last ACK
/// has gone out. A later packet from the container on the tuple is no longer
/// this flow's (its TIME_WAIT answering a SYN that came another way, Docker's
/// own DNAT say) and is left to the kernel; a client packet on the flow clears
/// it (the client did not get that ACK and sends its FIN again).
pub const CT_F_DONE: u8 = 1 << 4;
/// Set by `portfwd del --kill`: the flow is to be reset.
pub const CT_F_KILL: u8 = 1 << 5;
/// A killed flow's packet in this entry's direction was already turned into
/// a RST for its receiver; later ones are bounced back to their sender as RSTs.
pub const CT_F_KILL_SENT: u8 = 1 << 6;
/// Both FINs or a RST were seen: the entry's lifetime is no longer extended.
pub const CT_F_CLOSING: u8 = 1 << 7;

/// `CtEntry::mflags` bits: how the flow relates to its mapping.
/// The flow came in through a wildcard mapping (no HOST_IP).
pub const CT_M_WILDCARD: u8 = 1 << 0;

/// Conntrack lifetimes (nanoseconds, measured from the last packet).
/// TCP before the handshake completes.
pub const CT_LIFETIME_TCP_SYN_NS: u64 = 60 * 1_000_000_000;
/// TCP once both sides have spoken (as Cilium: 6 hours).
pub const CT_LIFETIME_TCP_NS: u64 = 21_600 * 1_000_000_000;
/// TCP after both FINs or a RST.
pub const CT_LIFETIME_CLOSE_NS: u64 = 10 * 1_000_000_000;
/// UDP, refreshed by a datagram in either direction.
pub const CT_LIFETIME_UDP_NS: u64 = 60 * 1_000_000_000;

/// Value of `pf_ct4` / `pf_ct6`. A flow has two entries, one per direction;
/// each knows enough to find its sibling:
/// - forward entry (key client -> host:port): `nat_*` is the container
///   endpoint the destination is rewritten to, `ifindex` the bridge;
/// - reply entry (key container -> `peer` or client): `nat_*` is the host
///   address and port the source is rewritten back to, `ifindex` the
///   interface the client came in on.
///
/// Hairpin flows (a container on the bridge reaching a published port
/// through a host address) are source-NATed as well, since the container's
/// reply would otherwise go straight back over the bridge. For them `peer_*`
/// is set: on the forward entry it is the source the packet is rewritten to
/// (the host address the client used, with a free port), on the reply entry
/// the client's own address and port the destination is rewritten back to.
/// Other flows have `peer_addr_be` unspecified.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtEntry<A> {
    /// `bpf_ktime_get_ns()` after which the entry is dead.
    pub expires_ns: u64,
    pub created_ns: u64,
    /// Packets and bytes (L3 length) seen in this entry's direction.
    pub packets: u64,
    pub bytes: u64,
    pub nat_addr_be: A,
    /// Hairpin flows only (see above).
    pub peer_addr_be: A,
    pub ifindex: u32,
    pub nat_port_be: u16,
    pub peer_port_be: u16,
    pub dir: u8,
    pub flags: u8,
    /// `CT_M_*` bits.
    pub mflags: u8,
    pub pad: u8,
    /// The mapping's counters (`Backend::stats_slot`).
    pub stats_slot: u32,
    /// The table's generation (`pf_meta`'s `META_GENERATION`) when the
    /// entry was last checked against the mapping table: while it is the
    /// current one, a UDP datagram needs no mapping lookup.
    pub generation: u32,
    pub pad2: u32,
}

impl<A: Addr> CtEntry<A> {
    /// True for the entries of a hairpin flow (source-NATed too).
    #[inline(always)]
    pub fn is_hairpin(&self) -> bool {
        !self.peer_addr_be.is_unspecified()
    }

    #[inline(always)]
    pub fn is_reply(&self) -> bool {
        self.dir == CT_DIR_REPLY
    }

    /// True if this is the reply entry of a hairpin flow from client
    /// `addr_be:port_be`: that client starting over on the same tuple may
    /// take the entry's source port again.
    #[inline(always)]
    pub fn is_reply_to(&self, addr_be: A, port_be: u16) -> bool {
        self.dir == CT_DIR_REPLY && self.peer_addr_be == addr_be && self.peer_port_be == port_be
    }

    /// The host address and port of the flow this entry (stored at `key`)
    /// belongs to: the destination of a forward entry, the NAT source of a
    /// reply entry.
    #[inline(always)]
    pub fn host_side(&self, key: &CtKey<A>) -> (A, u16) {
        if self.dir == CT_DIR_FORWARD {
            (key.daddr_be, key.dport_be)
        } else {
            (self.nat_addr_be, self.nat_port_be)
        }
    }

    /// The key of the flow's mapping (and of its counters).
    #[inline(always)]
    pub fn mapping_key(&self, key: &CtKey<A>) -> crate::MapKey<A> {
        let (addr, port) = self.host_side(key);
        let addr = if self.mflags & CT_M_WILDCARD != 0 {
            A::default()
        } else {
            addr
        };
        crate::MapKey::new(addr, port, key.proto)
    }

    /// The key of the other direction of the flow this entry (stored at
    /// `key`) belongs to: forward client -> host:port pairs with reply
    /// container -> client (container -> peer for hairpin flows), and the
    /// reverse.
    #[inline(always)]
    pub fn sibling_key(&self, key: &CtKey<A>) -> CtKey<A> {
        let hairpin = self.is_hairpin();
        if self.dir == CT_DIR_FORWARD {
            let (to_addr, to_port) = if hairpin {
                (self.peer_addr_be, self.peer_port_be)
            } else {
                (key.saddr_be, key.sport_be)
            };
            CtKey::new(
                self.nat_addr_be,
                to_addr,
                self.nat_port_be,
                to_port,
                key.proto,
            )
        } else {
            let (from_addr, from_port) = if hairpin {
                (self.peer_addr_be, self.peer_port_be)
            } else {
                (key.daddr_be, key.dport_be)
            };
            CtKey::new(
                from_addr,
                self.nat_addr_be,
                from_port,
                self.nat_port_be,
                key.proto,
            )
        }
    }
}

crate::assert_layout!(CtKey<V4> = V4, V4, u16, u16, u8, [u8; 3]; 16);
crate::assert_layout!(CtKey<V6> = V6, V6, u16, u16, u8, [u8; 3]; 40);
crate::assert_layout!(CtEntry<V4> = u64, u64, u64, u64, V4, V4, u32, u16, u16, u8, u8, u8, u8, u32, u32, u32; 64);
crate::assert_layout!(CtEntry<V6> = u64, u64, u64, u64, V6, V6, u32, u16, u16, u8, u8, u8, u8, u32, u32, u32; 88);
