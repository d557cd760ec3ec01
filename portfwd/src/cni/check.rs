//! CHECK: the container's mappings are published and point at the
//! addresses of prevResult.
use portfwd::ops::{self, pod::Wrong};

use super::{
    error::{CniError, NOT_IN_PLACE},
    types::{self, NetConf},
    Env,
};

pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    let (_, ifname) = env.attachment()?;
    let conf = NetConf::parse(stdin)?;
    let prev = conf.require_prev_result()?;
    let addrs = types::container_addresses(prev, ifname)?;
    let mappings = super::wanted_mappings(&conf, &addrs)?;
    let wrong = ops::verify_pod(&mappings)?;
    if wrong.is_empty() {
        return Ok(String::new());
    }
    let details: Vec<String> = wrong
        .iter()
        .map(|w| match w {
            Wrong::Missing(m) => format!("{m}: not published"),
            Wrong::Elsewhere(m, to) => format!("{m}: published to {to} instead"),
        })
        .collect();
    Err(CniError::new(
        NOT_IN_PLACE,
        format!(
            "{} of the container's port mappings are not in place",
            wrong.len()
        ),
    )
    .with_details(details.join("; ")))
}
