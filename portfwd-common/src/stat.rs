//! Indices of `pf_stats` (a per-CPU array of u64 counters), with their names.
//!
//! Events are numbered from 1; drop reasons from 130 up, a code set disjoint
//! from TC verdicts (TC_ACT_* are -1..=8), so a reason can never be mistaken
//! for a verdict.

/// Declares each counter's code and its name in one place, and the table of
/// both for userspace reports.
macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident = $code:literal, $text:literal;)*) => {
        $($(#[$doc])* pub const $name: u32 = $code;)*
        /// (code, name) for every counter, for userspace reports.
        pub const NAMES: &[(u32, &str)] = &[$(($code, $text)),*];
        /// The highest code in use.
        pub const MAX_CODE: u32 = {
            let codes = [$($code),*];
            let mut max = 0;
            let mut i = 0;
            while i < codes.len() {
                if codes[i] > max {
                    max = codes[i];
                }
                i += 1;
            }
            max
        };
    };
}

counters! {
    DNAT = 1, "dnat";
    REVERSE_NAT = 2, "reverse_nat";
    CT_NEW = 3, "ct_new";
    FRAGMENT_PASSED = 4, "fragment_passed";
    CT_EXPIRED = 5, "ct_expired";
    KILL_RST_FORWARDED = 6, "kill_rst_forwarded";
    KILL_RST_REFLECTED = 7, "kill_rst_reflected";
    SOCK_REWRITTEN = 8, "sock_rewritten";
    BIND_REFUSED = 9, "bind_refused";
    HAIRPIN = 10, "hairpin";
    /// A hairpin flow took another source port: the client's own was in use.
    HAIRPIN_PORT_MOVED = 11, "hairpin_port_moved";
    /// A reply matched a portfwd entry but belongs to another path (its
    /// SYN-ACK answers a SYN portfwd never forwarded): the entries were
    /// dropped and the packet left to the kernel.
    CT_FOREIGN = 12, "ct_foreign";
    /// A new connection reused the tuple of a flow portfwd still tracked.
    CT_REPLACED = 13, "ct_replaced";
    /// A flow's packet found its entry but not the other direction's (the
    /// LRU evicted it under pressure).
    CT_SIBLING_LOST = 14, "ct_sibling_lost";
    /// ICMP errors about portfwd flows, translated toward the container.
    ICMP_TO_CONTAINER = 15, "icmp_to_container";
    /// ICMP errors from a container, translated toward the client.
    ICMP_TO_CLIENT = 16, "icmp_to_client";
    /// "Fragmentation needed" / "packet too big" sent by portfwd.
    ICMP_FRAG_NEEDED_SENT = 17, "icmp_frag_needed_sent";
    /// One sent was not: the rate limit was reached (the packet is dropped).
    ICMP_RATE_LIMITED = 18, "icmp_rate_limited";
    /// Fragments of portfwd datagrams forwarded (first and later ones).
    FRAGMENT_FORWARDED = 19, "fragment_forwarded";
    /// Fragments that came before their first one and wait for it.
    FRAGMENT_QUEUED = 20, "fragment_queued";
    /// Waiting fragments sent through the program again once their first came.
    FRAGMENT_REPLAYED = 21, "fragment_replayed";
    /// Packets too big for the egress device, without DF, cut into fragments.
    FRAGMENTED = 22, "fragmented";

    DROP_CSUM_L3 = 130, "drop_csum_l3";
    DROP_CSUM_L4 = 131, "drop_csum_l4";
    DROP_STORE = 132, "drop_store";
    DROP_CT_CREATE = 133, "drop_ct_create";
    DROP_REDIRECT = 134, "drop_redirect";
    /// No free source port for a hairpin flow.
    DROP_NO_PORT = 135, "drop_no_port";
    /// An ICMP error about a portfwd flow whose checksum does not verify.
    DROP_ICMP_CSUM = 136, "drop_icmp_csum";
    /// A fragment that could not be tracked or queued.
    DROP_FRAG = 137, "drop_frag";
    /// A packet too big for the egress device that could be neither
    /// answered (rate limit) nor fragmented.
    DROP_TOO_BIG = 138, "drop_too_big";
}

/// True for drop reasons (as opposed to events).
pub const fn is_drop(code: u32) -> bool {
    code >= 130
}

const _: () = assert!(MAX_CODE < crate::STATS_MAX);
