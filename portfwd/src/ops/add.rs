//! `portfwd add [--replace] [--force] SPEC...`
use std::fmt::Write as _;

use crate::{error::Result, spec::Mapping, table};

pub struct Args {
    pub mappings: Vec<Mapping>,
    /// Re-point host ports that are already published.
    pub replace: bool,
    /// Publish even if a host process holds the port.
    pub force: bool,
}

/// Adds mappings to the attached namespace; they apply from the next packet.
/// With `replace`, a published port is re-pointed: new TCP connections go to
/// the new endpoint while established ones finish on the old one; UDP follows
/// at once.
pub fn run(args: &Args) -> Result<String> {
    crate::spec::check_unique(&args.mappings)?;
    let mut at = super::open_attached()?;
    table::check_free(&at.maps, &args.mappings, args.replace)?;
    if !args.force {
        super::check_not_held(&args.mappings)?;
    }
    // Resolve every bridge before changing anything.
    let bridges = at.state.bridges();
    let mut by_bridge: std::collections::BTreeMap<u32, Vec<crate::spec::Mapping>> =
        Default::default();
    for m in &args.mappings {
        by_bridge
            .entry(super::bridge_for(&bridges, &at.networks, m)?)
            .or_default()
            .push(*m);
    }
    for (bridge, mappings) in &by_bridge {
        table::add(&mut at.maps, mappings, *bridge, args.replace)?;
    }
    let mut out = String::new();
    for m in &args.mappings {
        let _ = writeln!(out, "added {m}");
    }
    Ok(out)
}
