//! ADD: publish the container's port mappings (attaching the host interface
//! that reaches it if needed) and pass the previous result on.
use portfwd::ops;

use super::{
    error::{CniError, INVALID_CONFIG},
    state::{Entry, Record, Store},
    types::{self, NetConf},
    Env,
};

pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    let (container_id, ifname) = env.attachment()?;
    let conf = NetConf::parse(stdin)?;
    let prev = conf.require_prev_result()?;
    let addrs = types::container_addresses(prev, ifname)?;
    let mappings = super::wanted_mappings(&conf, &addrs)?;
    if !conf.runtime_config.port_mappings.is_empty() && mappings.is_empty() {
        return Err(CniError::new(
            INVALID_CONFIG,
            format!(
                "prevResult gives {ifname} no address that the port mappings can use \
                 (addresses: {addrs:?})"
            ),
        ));
    }
    let store = Store::open(conf.state_dir.as_deref())?;
    // An ADD again without DEL: what the earlier one published goes first.
    if let Some(old) = store.load(&conf.name, container_id, ifname)? {
        super::del::remove(&store, &old)?;
    }
    if !mappings.is_empty() {
        let report = ops::publish_pod(&ops::pod::PublishRequest {
            mappings,
            external: conf.external_interfaces.clone(),
            cgroup: conf.cgroup.clone(),
            host_may_bind: true,
        })?;
        let record = Record {
            network: conf.name.clone(),
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
            mappings: report
                .published
                .iter()
                .map(|r| Entry::new(&r.mapping, r.ifindex))
                .collect(),
        };
        let noted = report.attached.iter().try_for_each(|index| {
            let name = portfwd::host::ifaces::ifname(*index).unwrap_or_default();
            store.mark_attached(*index, &name)
        });
        if let Err(e) = noted.and_then(|()| store.save(&record)) {
            for index in &report.attached {
                store.unmark_attached(*index);
            }
            let _ = ops::unpublish_pod(&ops::pod::UnpublishRequest {
                mappings: record.mappings.iter().map(Entry::mapping).collect(),
                release: report.attached.clone(),
            });
            return Err(e);
        }
    }
    let mut result = prev.clone();
    result["cniVersion"] = conf.cni_version.clone().into();
    Ok(result.to_string() + "\n")
}
