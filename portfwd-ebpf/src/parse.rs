//! Header parsing. Every read goes through `TcContext::load`
//! (bpf_skb_load_bytes), which checks bounds at run time, so a truncated or
//! malformed packet makes a load fail and the packet is left alone.
use aya_ebpf::programs::TcContext;
use portfwd_common::{PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Offsets inside the IPv4 header.
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;
/// Offsets inside the TCP / UDP header.
pub const L4_SPORT_OFF: usize = 0;
pub const L4_DPORT_OFF: usize = 2;
pub const TCP_FLAGS_OFF: usize = 13;
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// An IPv4 TCP or UDP packet, addresses and ports as on the wire.
pub struct Flow {
    /// Offset of the L4 header: 14 + the IPv4 header length (IP options included).
    pub l4_off: usize,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// IPv4 total length, for byte counters.
    pub ip_len: u16,
}

impl Flow {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == PROTO_TCP
    }

    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.is_tcp() {
            self.l4_off + TCP_CSUM_OFF
        } else {
            self.l4_off + UDP_CSUM_OFF
        }
    }
}

pub enum Parsed {
    Flow(Flow),
    /// An IPv4 fragment: its ports are not in this packet (or not all of it).
    Fragment,
    /// Anything else: not IPv4, not TCP/UDP, truncated or malformed.
    Other,
}

#[inline(always)]
pub fn ipv4(ctx: &TcContext) -> Parsed {
    match try_ipv4(ctx) {
        Ok(p) => p,
        Err(()) => Parsed::Other,
    }
}

#[inline(always)]
fn try_ipv4(ctx: &TcContext) -> Result<Parsed, ()> {
    let eth_proto: u16 = ctx.load(12).map_err(|_| ())?;
    if eth_proto != ETH_P_IP_BE {
        return Ok(Parsed::Other);
    }
    let ver_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| ())?;
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < 20 {
        return Ok(Parsed::Other);
    }
    let proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| ())?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Ok(Parsed::Other);
    }
    let tot_len_be: u16 = ctx.load(ETH_HLEN + 2).map_err(|_| ())?;
    let ip_len = u16::from_be(tot_len_be);
    if (ip_len as usize) < ihl {
        return Ok(Parsed::Other);
    }
    // More-fragments flag or a non-zero offset.
    let frag_be: u16 = ctx.load(ETH_HLEN + 6).map_err(|_| ())?;
    if u16::from_be(frag_be) & 0x3fff != 0 {
        return Ok(Parsed::Fragment);
    }
    let saddr_be: u32 = ctx.load(ETH_HLEN + IP_SADDR_OFF).map_err(|_| ())?;
    let daddr_be: u32 = ctx.load(ETH_HLEN + IP_DADDR_OFF).map_err(|_| ())?;
    let l4_off = ETH_HLEN + ihl;
    let sport_be: u16 = ctx.load(l4_off + L4_SPORT_OFF).map_err(|_| ())?;
    let dport_be: u16 = ctx.load(l4_off + L4_DPORT_OFF).map_err(|_| ())?;
    let tcp_flags = if proto == PROTO_TCP {
        // The checksum is the last field we rewrite: make sure the whole
        // fixed TCP header is present before touching anything.
        let _csum: u16 = ctx.load(l4_off + TCP_CSUM_OFF).map_err(|_| ())?;
        ctx.load::<u8>(l4_off + TCP_FLAGS_OFF).map_err(|_| ())?
    } else {
        let _csum: u16 = ctx.load(l4_off + UDP_CSUM_OFF).map_err(|_| ())?;
        0
    };
    Ok(Parsed::Flow(Flow {
        l4_off,
        saddr_be,
        daddr_be,
        sport_be,
        dport_be,
        proto,
        tcp_flags,
        ip_len,
    }))
}
