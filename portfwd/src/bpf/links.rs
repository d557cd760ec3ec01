//! Attaching programs through pinned links, and taking them off again.
use std::{io, path::Path};

use aya::{
    programs::{
        links::{CgroupAttachMode, FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
};

use crate::error::{Error, Result};

/// Attaches a cgroup sock_addr program to `cgroup` (alongside any others:
/// multi-attach) and pins the link at `pin`. A link already pinned there is
/// removed only after the new one is in place, so no connect(2) in between
/// misses the hook; while both exist the second sees an already rewritten
/// address and does nothing.
pub fn attach_cgroup_pinned(prog: &mut CgroupSockAddr, cgroup: &Path, pin: &Path) -> Result<()> {
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.display()), e))?;
    let id = prog
        // BPF links on cgroups always coexist with other links; the kernel
        // wants no multi-attach flag with them (EINVAL).
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| Error::ebpf(format!("attaching to cgroup {}", cgroup.display()), e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| Error::ebpf("take_link", e))?;
    let link: FdLink = link
        .try_into()
        .map_err(|e| Error::ebpf(format!("cgroup link on {}", cgroup.display()), e))?;
    // bpffs refuses dots in names: no "x.new".
    let mut tmp = pin.as_os_str().to_owned();
    tmp.push("_new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp)
        .map_err(|e| Error::ebpf(format!("pinning {}", tmp.display()), e))?;
    detach_pinned(pin)?;
    std::fs::rename(&tmp, pin).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
    Ok(())
}

/// Attaches `prog` to `ifname`'s TC ingress through a TCX link pinned at
/// `pin`. If a link is already pinned there, its program is swapped
/// atomically (no packet sees a gap); a stale pin whose interface is gone is
/// replaced by a fresh link.
pub fn attach_pinned(prog: &mut SchedClassifier, ifname: &str, pin: &Path) -> Result<()> {
    match PinnedLink::from_pin(pin) {
        Ok(old) => {
            let link = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| Error::ebpf(format!("pinned link {}", pin.display()), e));
            let replaced = link.and_then(|link| {
                prog.attach_to_link(link)
                    .map_err(|e| Error::ebpf(format!("replacing the program on {ifname}"), e))
            });
            match replaced {
                Ok(id) => {
                    // The pin keeps the link; dropping our fd is fine.
                    let _link = prog
                        .take_link(id)
                        .map_err(|e| Error::ebpf("take_link", e))?;
                    return Ok(());
                }
                Err(_) => {
                    std::fs::remove_file(pin)
                        .map_err(|e| Error::io(format!("removing stale {}", pin.display()), e))?;
                }
            }
        }
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::ebpf(format!("opening {}", pin.display()), e)),
    }
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| Error::ebpf(format!("attaching to {ifname} ingress"), e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| Error::ebpf("take_link", e))?;
    let link: FdLink = link
        .try_into()
        .map_err(|e| Error::ebpf(format!("TCX link on {ifname}"), e))?;
    link.pin(pin)
        .map_err(|e| Error::ebpf(format!("pinning {}", pin.display()), e))?;
    Ok(())
}

/// Takes a pinned link's program off its hook at once, then removes the pin.
/// Unlinking the pin alone drops the last reference only after an RCU grace
/// period (bpffs frees the inode then), so the program could still run, and
/// be listed, after `detach` returned; BPF_LINK_DETACH ends it now.
pub fn detach_pinned(pin: &Path) -> Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    if let Ok(fd) = portfwd_sys::obj_get(pin) {
        use std::os::fd::AsFd as _;
        portfwd_sys::link_detach(fd.as_fd())
            .map_err(|e| Error::io(format!("detaching {}", pin.display()), e))?;
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", pin.display()), e))
        }
        _ => Ok(()),
    }
}
