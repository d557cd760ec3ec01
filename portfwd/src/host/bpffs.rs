//! Making sure a BPF filesystem is mounted where portfwd pins its state.
use std::{ffi::CString, os::unix::ffi::OsStrExt as _, path::Path};

use crate::error::{Error, Result};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs at /sys/fs/bpf unless it is there already.
pub fn ensure_mounted() -> Result<()> {
    let path = Path::new(BPFFS);
    if is_bpffs(path) {
        return Ok(());
    }
    let fail = |why: String| Error::NoBpffs {
        path: path.to_path_buf(),
        why,
    };
    if !path.exists() {
        std::fs::create_dir_all(path).map_err(|e| fail(format!("cannot create it: {e}")))?;
    }
    let target = CString::new(BPFFS).expect("no NUL");
    let fstype = CString::new("bpf").expect("no NUL");
    // SAFETY: mount(2) with valid C strings and no data.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(fail(format!(
            "mount failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    if !is_bpffs(path) {
        return Err(fail("mounted, but it is not a BPF filesystem".into()));
    }
    Ok(())
}
