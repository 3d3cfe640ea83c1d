//! The shared-memory transport of the runner protocol: anonymous sealed
//! memory files (`memfd`), mapping them, lending a stored file's
//! descriptor and range instead of its bytes, and moving frames with
//! descriptors attached (`SCM_RIGHTS`) over the Unix socket.
//!
//! Invariants:
//! - a descriptor received from a runner is mapped only after checking
//!   that it is sealed against shrinking and writing (`F_SEAL_SHRINK`,
//!   `F_SEAL_WRITE`): a runner that truncated a mapped memfd would make
//!   the host fault (`SIGBUS`) on its next read; sealed, it cannot;
//! - a stored file is lent by descriptor only when the bytes lie inside a
//!   read-only mapping of it whose device and inode match the file opened
//!   now (`/proc/self/maps`), so the runner reads exactly the bytes the
//!   host was handed;
//! - every send uses `MSG_NOSIGNAL`: a dead runner is an error, never a
//!   `SIGPIPE` in the host.
//!
//! Decision: only buffers of at least [`LEND_MIN`] bytes are looked up in
//! `/proc/self/maps`; smaller ones (and heap buffers of any size) are
//! copied into a memfd once: reading the maps costs more than copying a
//! small value.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Instant;

use memmap2::{Mmap, MmapOptions};

use super::wire::{Region, MAX_FRAME};
use crate::value::Buffer;

/// Most descriptors one frame carries.
pub(crate) const MAX_FDS: usize = 64;
/// Smallest buffer lent by descriptor rather than copied.
pub(crate) const LEND_MIN: usize = 1 << 20;
/// Alignment of each payload in an arena (tensors are read in place).
const ALIGN: u64 = 64;

/// A new memfd named `name` (seen in `/proc/PID/fd`), sealable.
pub(crate) fn create(name: &str) -> io::Result<File> {
    let name = std::ffi::CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: `name` is a valid NUL-terminated string; the call has no
    // other memory preconditions.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by memfd_create and is owned by no one else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

const SEALS: libc::c_int =
    libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;

/// Seals `file` against any further change.
pub(crate) fn seal(file: &File) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with an integer argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An arena being filled: payloads appended at aligned offsets.
pub(crate) struct ArenaWriter {
    file: File,
    len: u64,
}

impl ArenaWriter {
    /// A new, empty arena.
    pub(crate) fn new(name: &str) -> io::Result<Self> {
        Ok(ArenaWriter {
            file: create(name)?,
            len: 0,
        })
    }
    /// Appends `bytes` at the next aligned offset; returns the offset.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> io::Result<u64> {
        self.align()?;
        let at = self.len;
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(at)
    }
    /// Appends to the bytes just written (no alignment).
    pub(crate) fn extend(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
    /// Starts a new aligned piece; returns its offset.
    pub(crate) fn start(&mut self) -> io::Result<u64> {
        self.align()?;
        Ok(self.len)
    }
    fn align(&mut self) -> io::Result<()> {
        let pad = (ALIGN - self.len % ALIGN) % ALIGN;
        if pad > 0 {
            self.file
                .write_all(&[0u8; ALIGN as usize][..pad as usize])?;
            self.len += pad;
        }
        Ok(())
    }
    /// Seals the arena and returns its descriptor.
    pub(crate) fn finish(self) -> io::Result<File> {
        seal(&self.file)?;
        Ok(self.file)
    }
}

/// What mapping a received descriptor failed with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MapError {
    /// The memfd is not sealed, so it could shrink under the mapping.
    #[error("shared memory from the runner is not sealed")]
    NotSealed,
    /// The OS refused.
    #[error("cannot map shared memory from the runner: {0}")]
    Io(#[from] io::Error),
}

/// Maps a memfd received from a runner (untrusted: it must be sealed).
pub(crate) fn map_sealed(fd: OwnedFd) -> Result<Buffer, MapError> {
    // SAFETY: fcntl query on a descriptor we own.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_WRITE;
    if seals < 0 || seals & needed != needed {
        return Err(MapError::NotSealed);
    }
    let file = File::from(fd);
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Buffer::from_vec(Vec::new()));
    }
    // SAFETY: the memfd is sealed against shrinking and writing (checked
    // above), so the mapped bytes stay valid and unchanged for the
    // mapping's life.
    let map = unsafe { MmapOptions::new().len(len as usize).map(&file) }?;
    Ok(Buffer::from_owner(map))
}

/// A read-only view of `len` bytes at `offset` of a file the host lent
/// (runner side: the host is trusted; the file is a sealed memfd or a
/// store file, which is never modified in place).
pub(crate) fn map_lent(file: &File, offset: u64, len: u64) -> io::Result<Buffer> {
    if len == 0 {
        return Ok(Buffer::from_vec(Vec::new()));
    }
    let page = page_size();
    let start = offset - offset % page;
    let skip = (offset - start) as usize;
    // SAFETY: memfds the host sends are sealed; store files are written
    // once under a temp name and never changed in place (store
    // invariant), so the mapping's bytes do not change.
    let map: Mmap = unsafe {
        MmapOptions::new()
            .offset(start)
            .len(skip + len as usize)
            .map(file)
    }?;
    let whole = Buffer::from_owner(map);
    whole
        .slice(skip..skip + len as usize)
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// Descriptors gathered for one request: source 0 is an arena payloads
/// are copied into once; sources `1..` are lent files, each sent once.
pub(crate) struct Lender {
    arena: ArenaWriter,
    lent: Vec<File>,
    keys: Vec<(u64, u64)>,
}

impl Lender {
    /// An empty lender (its arena is created now).
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Lender {
            arena: ArenaWriter::new("stowage-request")?,
            lent: Vec::new(),
            keys: Vec::new(),
        })
    }

    /// Adds `bytes` to the request: by descriptor and range when they lie
    /// in a mapped file, else copied into the arena.
    pub(crate) fn lend(&mut self, bytes: &[u8]) -> io::Result<Region> {
        if bytes.len() >= LEND_MIN && self.lent.len() + 2 < MAX_FDS {
            if let Some((file, offset)) = find_mapped_file(bytes) {
                let key = file_key(&file)?;
                let index = match self.keys.iter().position(|k| *k == key) {
                    Some(i) => i,
                    None => {
                        self.lent.push(file);
                        self.keys.push(key);
                        self.lent.len() - 1
                    }
                };
                return Ok(Region {
                    source: 1 + index as u32,
                    offset,
                    len: bytes.len() as u64,
                });
            }
        }
        self.copy(bytes)
    }

    /// Copies `bytes` into the arena (source 0).
    pub(crate) fn copy(&mut self, bytes: &[u8]) -> io::Result<Region> {
        let offset = self.arena.append(bytes)?;
        Ok(Region {
            source: 0,
            offset,
            len: bytes.len() as u64,
        })
    }

    /// The descriptors to send, in source order (the arena sealed first).
    pub(crate) fn finish(self) -> io::Result<Vec<File>> {
        let mut files = vec![self.arena.finish()?];
        files.extend(self.lent);
        Ok(files)
    }
}

fn file_key(file: &File) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    Ok((meta.dev(), meta.ino()))
}

/// The file mapped at `bytes` and the bytes' offset in it, if they lie in
/// one file mapping whose file is still the one mapped.
fn find_mapped_file(bytes: &[u8]) -> Option<(File, u64)> {
    let start = bytes.as_ptr() as u64;
    let end = start + bytes.len() as u64;
    let mut maps = String::new();
    File::open("/proc/self/maps")
        .ok()?
        .read_to_string(&mut maps)
        .ok()?;
    for line in maps.lines() {
        // "start-end perms offset major:minor inode   path"
        let mut fields = line.split_whitespace();
        let range = fields.next()?;
        let (lo, hi) = range.split_once('-')?;
        let (lo, hi) = (
            u64::from_str_radix(lo, 16).ok()?,
            u64::from_str_radix(hi, 16).ok()?,
        );
        if !(lo <= start && end <= hi) {
            continue;
        }
        let perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let device = fields.next()?;
        let inode: u64 = fields.next()?.parse().ok()?;
        let path: Vec<&str> = fields.collect();
        if inode == 0 || perms.contains('w') || path.len() != 1 || !path[0].starts_with('/') {
            return None;
        }
        let (major, minor) = device.split_once(':')?;
        let (major, minor) = (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        );
        let file = File::open(Path::new(path[0])).ok()?;
        let (dev, ino) = file_key(&file).ok()?;
        if ino != inode || dev != libc::makedev(major, minor) {
            return None;
        }
        return Some((file, offset + (start - lo)));
    }
    None
}

/// Sends one frame with `fds` attached.
pub(crate) fn send(sock: &UnixStream, frame: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let mut sent = 0;
    while sent < frame.len() {
        let chunk = &frame[sent..];
        let attach: &[RawFd] = if sent == 0 { &raw } else { &[] };
        sent += send_chunk(sock, chunk, attach)?;
    }
    Ok(())
}

fn send_chunk(sock: &UnixStream, chunk: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: chunk.as_ptr() as *mut libc::c_void,
        iov_len: chunk.len(),
    };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; if fds.is_empty() { 0 } else { space }];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = control.len() as _;
        // SAFETY: `msg` has a control buffer of CMSG_SPACE(fd_bytes) bytes,
        // so the first header and its data (fd_bytes) fit inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                fd_bytes,
            );
        }
    }
    loop {
        // SAFETY: `msg` points at `iov` and `control`, both alive for the call.
        let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// What receiving a frame ended with.
#[derive(Debug)]
pub(crate) enum Received {
    /// A frame body and the descriptors that came with it.
    Frame(Vec<u8>, Vec<OwnedFd>),
    /// The peer closed the socket.
    Closed,
    /// `deadline` passed first.
    TimedOut,
}

/// Waits until `sock` is readable or `deadline` passes (`None`: forever).
fn wait_readable(sock: &UnixStream, deadline: Option<Instant>) -> io::Result<bool> {
    loop {
        let timeout = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
            }
        };
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout) };
        if n > 0 {
            return Ok(true);
        }
        if n == 0 {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            continue;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Receives one frame (length prefix, body, descriptors), waiting at most
/// until `deadline`. A frame over [`MAX_FRAME`] is an error.
pub(crate) fn recv(sock: &UnixStream, deadline: Option<Instant>) -> io::Result<Received> {
    let mut fds = Vec::new();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if buf.len() >= 4 {
            let want = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if want > MAX_FRAME {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame of {want} bytes is over the limit"),
                ));
            }
            if buf.len() >= 4 + want {
                if buf.len() > 4 + want {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "bytes after the frame",
                    ));
                }
                buf.drain(..4);
                return Ok(Received::Frame(buf, fds));
            }
        }
        if !wait_readable(sock, deadline)? {
            return Ok(Received::TimedOut);
        }
        let n = recv_chunk(sock, &mut chunk, &mut fds)?;
        if n == 0 {
            return Ok(Received::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn recv_chunk(sock: &UnixStream, chunk: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut iov = libc::iovec {
        iov_base: chunk.as_mut_ptr() as *mut libc::c_void,
        iov_len: chunk.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: an all-zero msghdr is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    let n = loop {
        // SAFETY: `msg` points at `iov` and `control`, alive for the call;
        // MSG_CMSG_CLOEXEC keeps received descriptors out of children.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::ConnectionReset => return Ok(0),
            _ => return Err(error),
        }
    };
    // SAFETY: the kernel filled `control` with `msg_controllen` bytes of
    // well-formed control messages; each SCM_RIGHTS payload is an array of
    // descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = bytes / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(n)
}

/// Takes the socket a runner inherited on descriptor `fd`.
///
/// # Safety
/// `fd` must be an open socket descriptor owned by no other object in
/// this process (the runner's inherited descriptor 3).
pub(crate) unsafe fn inherited_socket(fd: RawFd) -> UnixStream {
    // SAFETY: the caller guarantees `fd` is an open socket we alone own.
    unsafe { UnixStream::from_raw_fd(fd) }
}

/// Blocks until the peer of `sock` hangs up (runner side: the host died or
/// dropped the runner), without reading from it.
pub(crate) fn wait_hangup(sock: BorrowedFd<'_>) {
    loop {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            return;
        }
    }
}

/// Borrowed descriptors of `files`.
pub(crate) fn borrow_all(files: &[File]) -> Vec<BorrowedFd<'_>> {
    files.iter().map(|f| f.as_fd()).collect()
}
