//! Named network namespaces (`ip netns`) that clean up after themselves, and
//! threads that run inside one.
use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;

use anyhow::{Context as _, Result};

use crate::cmd::{capture, run};

/// Where `ip netns add` bind-mounts the namespaces it creates.
pub const NETNS_DIR: &str = "/var/run/netns";

/// Network namespaces created through this guard; deleted (with every
/// interface in them) when it is dropped, in reverse order of creation.
#[derive(Default)]
pub struct NetnsGuard {
    names: Vec<String>,
}

impl NetnsGuard {
    /// `ip netns add NAME`, with its loopback up.
    pub fn add(&mut self, name: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        self.names.push(name.to_owned());
        ip(name, "link set lo up")
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            match capture(Command::new("ip").args(["netns", "del", &name])) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "warning: ip netns del {name}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(err) => eprintln!("warning: {err:#}"),
            }
        }
    }
}

/// `ip -n NETNS ARGS...`, `args` split on whitespace.
pub fn ip(netns: &str, args: &str) -> Result<()> {
    run(Command::new("ip")
        .args(["-n", netns])
        .args(args.split_whitespace()))
}

/// Moves the calling thread (only it) into the named network namespace.
pub fn enter(name: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: plain syscall on a descriptor we own for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("setns into {}", path.display()));
    }
    Ok(())
}

/// Runs `f` on a new thread inside the named network namespace; the rest of
/// the process stays where it is.
pub fn spawn_in<T, F>(name: &str, f: F) -> JoinHandle<Result<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
}

/// [`spawn_in`] and wait for the result.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    join(spawn_in(name, f))
}

/// Joins a thread from [`spawn_in`], turning a panic into an error.
pub fn join<T>(handle: JoinHandle<Result<T>>) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread panicked"))?
}
