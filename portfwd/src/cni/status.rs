//! STATUS (CNI 1.1.0): whether an ADD could succeed now. portfwd keeps no
//! daemon, so "ready" means what every ADD needs first: the privileges to
//! load programs and change interfaces, a kernel with TCX, and a state
//! directory it can lock.
use super::{
    error::{CniError, NOT_AVAILABLE},
    state::Store,
    types::NetConf,
};
use portfwd::host::privileges;

pub fn run(stdin: &[u8]) -> Result<String, CniError> {
    let conf = NetConf::parse(stdin)?;
    let unavailable = |e: portfwd::error::Error| CniError::new(NOT_AVAILABLE, e.to_string());
    privileges::check(false).map_err(unavailable)?;
    privileges::check_kernel().map_err(unavailable)?;
    Store::open(conf.state_dir.as_deref())
        .map_err(|e| CniError::new(NOT_AVAILABLE, e.to_string()))?;
    Ok(String::new())
}
