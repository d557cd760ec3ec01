//! The conntrack entries of both families, one row per flow; addresses in
//! their usual text forms (`[..]:port` for IPv6).
use portfwd_common::{CT_DIR_FORWARD, CT_F_ACK, CT_F_CLOSING, CT_F_KILL, PROTO_TCP, V4, V6};
use serde::Serialize;

use crate::{
    bpf::Maps,
    error::Result,
    family::{endpoint, Family},
    spec::Proto,
    table,
};

#[derive(Debug, Serialize)]
pub struct Flow {
    pub proto: String,
    pub client: String,
    pub host: String,
    pub container: String,
    /// Hairpin flows: the source the container sees (the host address the
    /// client used and the port the flow was given). None for other flows,
    /// where the container sees the client itself.
    pub container_sees: Option<String>,
    pub state: String,
    pub age_s: f64,
    pub expires_in_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Both families' flows, by host side then client.
pub fn collect(maps: &Maps) -> Vec<Flow> {
    let now = super::monotonic_ns();
    let mut out = Vec::new();
    collect_in::<V4>(maps, now, &mut out);
    collect_in::<V6>(maps, now, &mut out);
    out.sort_by(|a, b| (&a.host, &a.client).cmp(&(&b.host, &b.client)));
    out
}

fn collect_in<A: Family>(maps: &Maps, now: u64, out: &mut Vec<Flow>) {
    let endpoint = |addr: A, port_be: u16| endpoint(addr.to_ip(), u16::from_be(port_be));
    let conntrack = &A::maps(maps).conntrack;
    for (key, e) in conntrack.iter().filter_map(|r| r.ok()) {
        if e.dir != CT_DIR_FORWARD || e.expires_ns <= now {
            continue;
        }
        let reply = conntrack.get(&table::reply_key(&key, &e), 0).ok();
        let state = if key.proto != PROTO_TCP {
            "active"
        } else if e.flags & CT_F_KILL != 0 {
            "killed"
        } else if e.flags & CT_F_CLOSING != 0 || reply.is_some_and(|r| r.flags & CT_F_CLOSING != 0)
        {
            "closing"
        } else if e.flags & CT_F_ACK != 0 {
            "established"
        } else {
            "syn-sent"
        };
        out.push(Flow {
            proto: Proto::from_number(key.proto)
                .map_or_else(|| key.proto.to_string(), |p| p.to_string()),
            client: endpoint(key.saddr_be, key.sport_be),
            host: endpoint(key.daddr_be, key.dport_be),
            container: endpoint(e.nat_addr_be, e.nat_port_be),
            container_sees: e
                .is_hairpin()
                .then(|| endpoint(e.peer_addr_be, e.peer_port_be)),
            state: state.to_string(),
            age_s: now.saturating_sub(e.created_ns) as f64 / 1e9,
            expires_in_s: (e.expires_ns - now) as f64 / 1e9,
            bytes_in: e.bytes,
            bytes_out: reply.map_or(0, |r| r.bytes),
        });
    }
}

#[derive(Clone, Debug, Default)]
pub struct FlowsRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
}

#[derive(Debug, Default)]
pub struct FlowsReport {
    /// False: nothing is attached in the namespace (and `flows` is empty).
    pub attached: bool,
    /// By host side, then client.
    pub flows: Vec<Flow>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// The conntrack entries, one per flow.
pub fn flows(req: &FlowsRequest) -> Result<FlowsReport> {
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let Some(maps) = super::open_read_only()? else {
        return Ok(FlowsReport {
            dead_namespaces,
            ..Default::default()
        });
    };
    Ok(FlowsReport {
        attached: true,
        flows: collect(&maps),
        dead_namespaces,
    })
}
