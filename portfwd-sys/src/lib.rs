//! The raw bpf(2) calls that aya does not offer (or not publicly): getting a
//! pinned object, pinning one, detaching a link at once, creating a bare map,
//! querying the programs on a hook, and for the bench's cost measurement
//! loading a program that only returns, linking it, test runs and program
//! statistics. Constants are from linux/bpf.h.
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
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `enum bpf_prog_type`: TC classifiers and cgroup sock_addr hooks.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// The TCX ingress attach type (`enum bpf_attach_type`).
pub const BPF_TCX_INGRESS: u32 = 46;

pub const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

/// cgroup attach types (`enum bpf_attach_type`) of the socket hooks.
pub const BPF_CGROUP_INET4_BIND: u32 = 8;
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_UDP4_SENDMSG: u32 = 14;
pub const BPF_CGROUP_UDP4_RECVMSG: u32 = 19;
pub const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;
pub const BPF_CGROUP_INET6_BIND: u32 = 9;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
pub const BPF_CGROUP_UDP6_SENDMSG: u32 = 15;
pub const BPF_CGROUP_UDP6_RECVMSG: u32 = 20;
pub const BPF_CGROUP_INET6_GETPEERNAME: u32 = 30;

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

/// BPF_PROG_QUERY: the ids of the programs on a hook: `target` is a cgroup
/// descriptor for cgroup hooks, an interface index (in the caller's network
/// namespace) for TCX.
pub fn prog_query_ids(target: u32, attach_type: u32) -> io::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    // target_fd / target_ifindex, attach_type; prog_ids at 16, prog_cnt
    // (in: room, out: count) at 24.
    let mut attr = Attr::new()
        .u32(0, target)
        .u32(4, attach_type)
        .u64(16, ids.as_mut_ptr() as u64)
        .u32(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut attr)?;
    ids.truncate(attr.get_u32(24) as usize);
    Ok(ids)
}

/// BPF_PROG_GET_FD_BY_ID: a descriptor for the loaded program `id`.
pub fn prog_get_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = Attr::new().u32(0, id); // prog_id
    bpf_fd(BPF_PROG_GET_FD_BY_ID, &mut attr)
}

/// What `struct bpf_prog_info` says of a program: its type, id and name,
/// and its run statistics (counted while kernel.bpf_stats_enabled=1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgInfo {
    pub prog_type: u32,
    pub id: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// BPF_OBJ_GET_INFO_BY_FD into a zeroed buffer of `N` bytes (larger than
/// the kernel's struct is fine: the tail stays zero).
fn obj_info<const N: usize>(fd: BorrowedFd<'_>) -> io::Result<[u8; N]> {
    #[repr(C, align(8))]
    struct Buf<const N: usize>([u8; N]);
    let mut buf = Buf([0u8; N]);
    // bpf_fd, info_len, info.
    let mut attr = Attr::new()
        .u32(0, fd_u32(fd))
        .u32(4, N as u32)
        .u64(8, buf.0.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(buf.0)
}

fn ne_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn ne_u64(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The program's `bpf_prog_info`.
pub fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    // type 0, id 4, name[16] 64, run_time_ns 192, run_cnt 200 (232 bytes
    // in 6.x).
    let b = obj_info::<256>(prog)?;
    let name = &b[64..80];
    let len = name.iter().position(|c| *c == 0).unwrap_or(name.len());
    Ok(ProgInfo {
        prog_type: ne_u32(&b, 0),
        id: ne_u32(&b, 4),
        name: String::from_utf8_lossy(&name[..len]).into_owned(),
        run_time_ns: ne_u64(&b, 192),
        run_cnt: ne_u64(&b, 200),
    })
}

/// The id of the program a link holds (`bpf_link_info.prog_id`).
pub fn link_prog_id(link: BorrowedFd<'_>) -> io::Result<u32> {
    // type 0, id 4, prog_id 8.
    Ok(ne_u32(&obj_info::<64>(link)?, 8))
}

/// BPF_PROG_LOAD of a program that only returns `value` (`r0 = value;
/// exit`): the floor under any program of its type.
pub fn prog_load_return(
    prog_type: u32,
    expected_attach_type: u32,
    value: i32,
    name: &str,
) -> io::Result<OwnedFd> {
    // mov64 r0, imm (BPF_ALU64 | BPF_MOV | BPF_K); exit (BPF_JMP | BPF_EXIT).
    let mut insns = [[0u8; 8]; 2];
    insns[0][0] = 0xb7;
    insns[0][4..8].copy_from_slice(&value.to_ne_bytes());
    insns[1][0] = 0x95;
    let license = c"GPL";
    // prog_type, insn_cnt, insns, license; prog_name[16] at 48,
    // expected_attach_type at 68.
    let mut attr = Attr::new()
        .u32(0, prog_type)
        .u32(4, insns.len() as u32)
        .u64(8, insns.as_ptr() as u64)
        .u64(16, license.as_ptr() as u64)
        .u32(68, expected_attach_type);
    let name = name.as_bytes();
    let n = name.len().min(15);
    attr.0[48..48 + n].copy_from_slice(&name[..n]);
    bpf_fd(BPF_PROG_LOAD, &mut attr)
}

/// BPF_LINK_CREATE: attaches `prog` to `target` (a cgroup descriptor, or an
/// interface index for TCX, where it goes last in the chain); the program
/// stays attached while the returned link is open.
pub fn link_create(prog: BorrowedFd<'_>, target: u32, attach_type: u32) -> io::Result<OwnedFd> {
    // prog_fd, target_fd / target_ifindex, attach_type; flags 0.
    let mut attr = Attr::new()
        .u32(0, fd_u32(prog))
        .u32(4, target)
        .u32(8, attach_type);
    bpf_fd(BPF_LINK_CREATE, &mut attr)
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return value.
    pub retval: u32,
    /// The kernel's measure of one run, averaged over the repeats, in ns.
    pub duration_ns: u32,
    /// How many bytes of the output packet were written to `data_out`.
    pub data_out_len: u32,
}

/// BPF_PROG_TEST_RUN of `prog` on a copy of `data` (a frame for TC
/// programs), with context `ctx` (e.g. a `struct __sk_buff` prefix; empty
/// for none), `repeat` times on the same buffer; the packet as the program
/// left it is written to `data_out`.
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    data_out: &mut [u8],
    ctx: &[u8],
    repeat: u32,
) -> io::Result<TestRun> {
    // prog_fd, retval 4, data_size_in 8, data_size_out 12, data_in 16,
    // data_out 24, repeat 32, duration 36, ctx_size_in 40, ctx_in 48.
    let mut attr = Attr::new()
        .u32(0, fd_u32(prog))
        .u32(8, data.len() as u32)
        .u32(12, data_out.len() as u32)
        .u64(16, data.as_ptr() as u64)
        .u64(24, data_out.as_mut_ptr() as u64)
        .u32(32, repeat);
    if !ctx.is_empty() {
        attr = attr.u32(40, ctx.len() as u32).u64(48, ctx.as_ptr() as u64);
    }
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRun {
        retval: attr.get_u32(4),
        duration_ns: attr.get_u32(36),
        data_out_len: attr.get_u32(12),
    })
}
