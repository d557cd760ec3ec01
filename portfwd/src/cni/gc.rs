//! GC (CNI 1.1.0): remove what ADD published for attachments the runtime no
//! longer has (those missing from `cni.dev/valid-attachments`).
use super::{error::CniError, state::Store, types::NetConf};

pub fn run(stdin: &[u8]) -> Result<String, CniError> {
    let conf = NetConf::parse(stdin)?;
    let store = Store::open(conf.state_dir.as_deref())?;
    for record in store.all(&conf.name)? {
        let valid = conf
            .valid_attachments
            .iter()
            .any(|a| a.container_id == record.container_id && a.ifname == record.ifname);
        if !valid {
            super::del::remove(&store, &record)?;
        }
    }
    Ok(String::new())
}
