//! Packets the bench makes itself: Ethernet frames for test runs, IPv4
//! packets for raw sockets, with TCP or UDP and every checksum filled in.
use std::net::Ipv4Addr;

pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// One direction of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

impl Tuple {
    pub fn new(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Self {
        Self {
            src,
            sport,
            dst,
            dport,
        }
    }

    /// The other direction.
    pub fn reversed(self) -> Self {
        Self::new(self.dst, self.dport, self.src, self.sport)
    }
}

/// The transport header to put on a packet.
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp { flags: u8, seq: u32, ack: u32 },
    Udp,
}

/// The Internet checksum of `data` folded onto `sum` (a partial sum).
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    !(sum as u16)
}

/// An IPv4 packet (no options, DF set) of
/// `t` carrying `l4` and `payload`.
pub fn ipv4(t: Tuple, l4: L4, payload: &[u8]) -> Vec<u8> {
    let (proto, mut seg) = match l4 {
        L4::Tcp { flags, seq, ack } => {
            let mut h = Vec::with_capacity(20 + payload.len());
            h.extend_from_slice(&t.sport.to_be_bytes());
            h.extend_from_slice(&t.dport.to_be_bytes());
            h.extend_from_slice(&seq.to_be_bytes());
            h.extend_from_slice(&ack.to_be_bytes());
            // Data offset 5 words; flags; window 64240; checksum; urgent.
            h.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
            (IPPROTO_TCP, h)
        }
        L4::Udp => {
            let mut h = Vec::with_capacity(8 + payload.len());
            h.extend_from_slice(&t.sport.to_be_bytes());
            h.extend_from_slice(&t.dport.to_be_bytes());
            h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            (IPPROTO_UDP, h)
        }
    };
    seg.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&t.src.octets());
    pseudo.extend_from_slice(&t.dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    let partial = u32::from(!checksum(&pseudo, 0));
    let sum = checksum(&seg, partial);
    let at = if proto == IPPROTO_TCP { 16 } else { 6 };
    // A UDP checksum of 0 means "none": send its other form.
    let sum = if proto == IPPROTO_UDP && sum == 0 {
        0xffff
    } else {
        sum
    };
    seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());

    let total = (20 + seg.len()) as u16;
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&total.to_be_bytes());
    // id 0, DF, TTL 64, protocol, checksum.
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&t.src.octets());
    ip.extend_from_slice(&t.dst.octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    ip.extend_from_slice(&seg);
    ip
}

/// An Ethernet frame of `ethertype` from `src` to `dst`.
fn ether(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The MAC addresses a frame travels between.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    pub from: [u8; 6],
    pub to: [u8; 6],
}

impl Link {
    /// An IPv4 packet in a frame on this link.
    pub fn ipv4(&self, t: Tuple, l4: L4, payload: &[u8]) -> Vec<u8> {
        ether(self.to, self.from, ETH_P_IP, &ipv4(t, l4, payload))
    }

    /// A broadcast ARP request from `sender` asking for `target`.
    pub fn arp_request(&self, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
        let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
        arp.extend_from_slice(&self.from);
        arp.extend_from_slice(&sender.octets());
        arp.extend_from_slice(&[0; 6]);
        arp.extend_from_slice(&target.octets());
        ether([0xff; 6], self.from, ETH_P_ARP, &arp)
    }
}

/// The addresses and ports of an Ethernet frame's IPv4 TCP or UDP packet.
pub fn frame_tuple(frame: &[u8]) -> Option<Tuple> {
    let ip = frame.get(14..)?;
    if u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP || ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let l4 = ip.get(ihl..ihl + 4)?;
    let addr = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Some(Tuple::new(
        addr(12),
        u16::from_be_bytes([l4[0], l4[1]]),
        addr(16),
        u16::from_be_bytes([l4[2], l4[3]]),
    ))
}

/// "aa:bb:cc:dd:ee:ff" as bytes.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checksum over a whole header that holds its own checksum is 0.
    #[test]
    fn checksums_verify() {
        let t = Tuple::new(
            Ipv4Addr::new(10, 0, 0, 1),
            1234,
            Ipv4Addr::new(10, 0, 0, 2),
            80,
        );
        for l4 in [
            L4::Tcp {
                flags: TCP_SYN,
                seq: 7,
                ack: 0,
            },
            L4::Udp,
        ] {
            let p = ipv4(t, l4, b"hello");
            assert_eq!(checksum(&p[..20], 0), 0, "IPv4 header checksum");
            let seg = &p[20..];
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&p[12..20]);
            pseudo.extend_from_slice(&[0, p[9]]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            let partial = u32::from(!checksum(&pseudo, 0));
            assert_eq!(checksum(seg, partial), 0, "{l4:?} checksum");
        }
    }

    #[test]
    fn tuples_come_back_out_of_frames() {
        let link = Link {
            from: [2, 0, 0, 0, 0, 1],
            to: [2, 0, 0, 0, 0, 2],
        };
        let t = Tuple::new(
            Ipv4Addr::new(10, 0, 0, 1),
            1234,
            Ipv4Addr::new(10, 0, 0, 2),
            80,
        );
        assert_eq!(frame_tuple(&link.ipv4(t, L4::Udp, b"x")), Some(t));
        assert_eq!(
            frame_tuple(&link.arp_request(t.src, t.dst)),
            None,
            "ARP has no tuple"
        );
        assert_eq!(parse_mac("02:00:0a:ff:00:01"), Some([2, 0, 10, 255, 0, 1]));
    }
}
