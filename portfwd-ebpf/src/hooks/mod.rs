//! One orchestrator per attach point: it parses, consults conntrack and the
//! mapping table, and decides which leaf transform (`xlate`) applies.
//! `forward` is the decision both orchestrators share: a packet toward a
//! published port.
pub mod bridge_ingress;
pub mod ext_ingress;
mod forward;
