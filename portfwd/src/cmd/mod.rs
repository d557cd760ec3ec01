//! One file per subcommand.
pub mod attach;
pub mod detach;
pub mod list;
