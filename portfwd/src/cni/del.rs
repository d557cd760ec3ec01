//! DEL: remove exactly what this attachment's ADD published, with or
//! without prevResult and the container's namespace; an attachment portfwd
//! knows nothing of is already deleted.
use portfwd::ops;

use super::{
    error::CniError,
    state::{Entry, Record, Store},
    types::NetConf,
    Env,
};

pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    let (container_id, ifname) = env.attachment()?;
    let conf = NetConf::parse(stdin)?;
    let store = Store::open(conf.state_dir.as_deref())?;
    if let Some(record) = store.load(&conf.name, container_id, ifname)? {
        remove(&store, &record)?;
    }
    Ok(String::new())
}

/// Unpublishes a record's mappings (those still pointing at its
/// container), detaches the interfaces an ADD attached that no mapping uses
/// any more, then forgets the record.
pub fn remove(store: &Store, record: &Record) -> Result<(), CniError> {
    let mut release: Vec<u32> = record
        .mappings
        .iter()
        .map(|e| e.ifindex)
        .filter(|i| store.attached_by_us(*i))
        .collect();
    release.sort_unstable();
    release.dedup();
    let report = ops::unpublish_pod(&ops::pod::UnpublishRequest {
        mappings: record.mappings.iter().map(Entry::mapping).collect(),
        release,
    })?;
    for index in report.released {
        store.unmark_attached(index);
    }
    store.forget(record)
}
