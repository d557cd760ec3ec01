//! The raw bpf(2) calls that aya does not offer (or not publicly): getting a
//! pinned object, pinning one, detaching a link at once, creating a bare map
//! and counting the programs on a cgroup hook. Constants are from
//! linux/bpf.h.
//!
//! A crate of its own, without an eBPF build step, so that xtask (which must
//! build before the eBPF toolchain exists) and the tests can use it too.
use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_DETACH: libc::c_long = 34;

pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// cgroup attach types (`enum bpf_attach_type`) of the socket hooks.
pub const BPF_CGROUP_INET4_BIND: u32 = 8;
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
pub const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
pub const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;

/// `union bpf_attr`, zeroed: its full size in 6.x (144 bytes), large enough
/// for every command here; the kernel wants every byte it does not know to
/// be zero, and some commands write fields back. Fields are written at their
/// byte offsets in linux/bpf.h, in native byte order.
#[repr(C, align(8))]
struct Attr([u8; 144]);

impl Attr {
    fn new() -> Self {
        Self([0; 144])
    }

    fn u32(mut self, offset: usize, value: u32) -> Self {
        self.0[offset..offset + 4].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn u64(mut self, offset: usize, value: u64) -> Self {
        self.0[offset..offset + 8].copy_from_slice(&value.to_ne_bytes());
        self
    }

    fn get_u32(&self, offset: usize) -> u32 {
        u32::from_ne_bytes(self.0[offset..offset + 4].try_into().expect("4 bytes"))
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for some commands writes) `size` bytes of
    // `attr`, which is exactly that long; pointers in it outlive the call
    // (every caller keeps what they point at alive across it).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A call that returns a new descriptor.
fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("bpf(2) returned no descriptor"))?;
    // SAFETY: the command returned a new descriptor, which we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    fd.as_raw_fd() as u32
}

/// BPF_OBJ_GET: a descriptor for the object (map, program, link) pinned at
/// `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = c_path(path)?;
    // pathname; bpf_fd, file_flags, path_fd 0.
    let mut attr = Attr::new().u64(0, c.as_ptr() as u64);
    bpf_fd(BPF_OBJ_GET, &mut attr)
}

/// BPF_OBJ_PIN: pins the object `fd` at `path`.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = c_path(path)?;
    // pathname, bpf_fd; file_flags 0.
    let mut attr = Attr::new().u64(0, c.as_ptr() as u64).u32(8, fd_u32(fd));
    bpf(BPF_OBJ_PIN, &mut attr).map(drop)
}

/// BPF_LINK_DETACH: the link's program leaves its hook now; the link stays
/// valid (and inert) until its last reference goes.
pub fn link_detach(link: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = Attr::new().u32(0, fd_u32(link)); // link_fd
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

/// BPF_MAP_CREATE of a map with no name, flags or BTF.
pub fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    let mut attr = Attr::new()
        .u32(0, map_type)
        .u32(4, key_size)
        .u32(8, value_size)
        .u32(12, max_entries);
    bpf_fd(BPF_MAP_CREATE, &mut attr)
}

/// BPF_PROG_QUERY on a cgroup: how many programs of `attach_type` it holds
/// itself (not inherited ones). With no id buffer the kernel writes only
/// the count (and the revision) back.
pub fn prog_query_count(cgroup: BorrowedFd<'_>, attach_type: u32) -> io::Result<u32> {
    // target_fd, attach_type; query_flags, attach_flags and prog_ids (no
    // buffer) 0; prog_cnt at 24.
    let mut attr = Attr::new().u32(0, fd_u32(cgroup)).u32(4, attach_type);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(attr.get_u32(24))
}
