//! `portfwd del [--kill] [HOST_IP:]HOST_PORT[-END][/tcp|/udp]...`
use std::fmt::Write as _;

use crate::{error::Result, spec::PortSelector, table};

/// Removes mappings. New connections to those ports get the host's normal
/// answer from the next packet on; established flows drain, or with `kill`
/// are reset.
pub fn run(selectors: &[PortSelector], kill: bool) -> Result<String> {
    let mut at = super::open_attached()?;
    let removed = table::remove(&mut at.maps, selectors, kill)?;
    let mut out = String::new();
    for h in &removed {
        let _ = writeln!(
            out,
            "removed {h}{}",
            if kill { " (flows killed)" } else { "" }
        );
    }
    Ok(out)
}
