//! Test harness shared by every test file, one file per concern:
//! `commands` (bounded commands for real engines), `topology` (throwaway network namespaces and the client / host /
//! container topology), `sockets` (listeners, HTTP, payloads), `hooked`
//! (clients the socket hooks see), `kernel` (programs the kernel holds) and
//! `assertions` (can the tests run here, usage errors, successful commands).
//! Everything is re-exported here, so a test file says `use common::*`.
#![allow(dead_code, unused_imports)]

mod assertions;
mod commands;
pub mod docker;
mod hooked;
mod kernel;
mod sockets;
mod topology;

pub use assertions::*;
pub use commands::*;
pub use hooked::*;
pub use kernel::*;
pub use sockets::*;
pub use topology::*;
