//! The two address families as userspace sees them: one trait, implemented
//! by the map address types (`V4`, `V6`), that turns std addresses into map
//! bytes and back and names each family's maps. Everything above it (SPECs,
//! the table, reports) holds `std::net::IpAddr`; code that touches the maps
//! is written once over `Family` and run for both (`FAMILIES`), each run
//! leaving alone what is not its family's.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portfwd_common::{
    Addr, MAP_CONNTRACK4, MAP_CONNTRACK6, MAP_LOCAL_ADDRS4, MAP_LOCAL_ADDRS6, MAP_MAPPINGS4,
    MAP_MAPPINGS6, V4, V6,
};

use crate::bpf::{FamilyMaps, Maps};

/// Which family an address is, for output and for `del [::]:80`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Af {
    V4,
    V6,
}

impl Af {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// The family's unspecified address: a wildcard host side.
    pub fn unspecified(self) -> IpAddr {
        match self {
            Self::V4 => Ipv4Addr::UNSPECIFIED.into(),
            Self::V6 => Ipv6Addr::UNSPECIFIED.into(),
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::V4 => Self::V6,
            Self::V6 => Self::V4,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// A map address type with its family's std type and maps.
pub trait Family: Addr + Ord + std::hash::Hash + aya::Pod {
    const FAMILY: Af;
    const MAP_MAPPINGS: &'static str;
    const MAP_CONNTRACK: &'static str;
    const MAP_LOCAL_ADDRS: &'static str;

    /// The map bytes of `ip`, or None if it is the other family's.
    fn from_ip(ip: IpAddr) -> Option<Self>;
    fn to_ip(self) -> IpAddr;
    /// This family's maps.
    fn maps(maps: &Maps) -> &FamilyMaps<Self>;
    fn maps_mut(maps: &mut Maps) -> &mut FamilyMaps<Self>;
}

impl Family for V4 {
    const FAMILY: Af = Af::V4;
    const MAP_MAPPINGS: &'static str = MAP_MAPPINGS4;
    const MAP_CONNTRACK: &'static str = MAP_CONNTRACK4;
    const MAP_LOCAL_ADDRS: &'static str = MAP_LOCAL_ADDRS4;

    fn from_ip(ip: IpAddr) -> Option<Self> {
        match ip {
            IpAddr::V4(a) => Some(u32::from_ne_bytes(a.octets())),
            IpAddr::V6(_) => None,
        }
    }

    fn to_ip(self) -> IpAddr {
        Ipv4Addr::from(self.to_ne_bytes()).into()
    }

    fn maps(maps: &Maps) -> &FamilyMaps<Self> {
        &maps.v4
    }

    fn maps_mut(maps: &mut Maps) -> &mut FamilyMaps<Self> {
        &mut maps.v4
    }
}

impl Family for V6 {
    const FAMILY: Af = Af::V6;
    const MAP_MAPPINGS: &'static str = MAP_MAPPINGS6;
    const MAP_CONNTRACK: &'static str = MAP_CONNTRACK6;
    const MAP_LOCAL_ADDRS: &'static str = MAP_LOCAL_ADDRS6;

    fn from_ip(ip: IpAddr) -> Option<Self> {
        let IpAddr::V6(a) = ip else {
            return None;
        };
        let o = a.octets();
        Some(std::array::from_fn(|i| {
            u32::from_ne_bytes(o[i * 4..i * 4 + 4].try_into().unwrap())
        }))
    }

    fn to_ip(self) -> IpAddr {
        let mut o = [0u8; 16];
        for (i, w) in self.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        Ipv6Addr::from(o).into()
    }

    fn maps(maps: &Maps) -> &FamilyMaps<Self> {
        &maps.v6
    }

    fn maps_mut(maps: &mut Maps) -> &mut FamilyMaps<Self> {
        &mut maps.v6
    }
}

/// `addr:port` in its usual text form: `[..]:port` for IPv6.
pub fn endpoint(addr: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_as_wire_bytes() {
        let v4: IpAddr = "192.168.1.2".parse().unwrap();
        let k = V4::from_ip(v4).unwrap();
        assert_eq!(k.to_ne_bytes(), [192, 168, 1, 2]);
        assert_eq!(k.to_ip(), v4);
        assert_eq!(V6::from_ip(v4), None);
        let v6: IpAddr = "fd00:17::15".parse().unwrap();
        let k = V6::from_ip(v6).unwrap();
        assert_eq!(k[0].to_ne_bytes(), [0xfd, 0, 0, 0x17]);
        assert_eq!(k[3].to_ne_bytes(), [0, 0, 0, 0x15]);
        assert_eq!(k.to_ip(), v6);
        assert_eq!(V4::from_ip(v6), None);
        // ::1 as the kernel side's is_loopback reads it.
        assert_eq!(
            V6::from_ip("::1".parse().unwrap()),
            Some([0, 0, 0, 1u32.to_be()])
        );
    }

    #[test]
    fn endpoints_in_usual_forms() {
        assert_eq!(endpoint("10.0.0.1".parse().unwrap(), 80), "10.0.0.1:80");
        assert_eq!(endpoint("fd00::2".parse().unwrap(), 80), "[fd00::2]:80");
        assert_eq!(endpoint(Af::V6.unspecified(), 8080), "[::]:8080");
    }
}
