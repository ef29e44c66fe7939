"""Every call nsshell makes into the kernel's namespace, mount and process
machinery, as small named steps.

Each step raises KernelError with a sentence that says what failed and what
to do about it.  Nothing else in nsshell calls unshare, setns, mount or prctl.

This module is imported on the hot path of ``nsshell run``, so it imports
only built-in modules at module level: ``posix``, not os (nsshell.lightos
says why).  ctypes is loaded the first time a libc call is needed (Python
3.11 has no posix.setns/posix.unshare; 3.12 does, and we use it).
"""

import posix

from nsshell import lightos

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 1 << 19
MS_RELATIME = 1 << 21

MNT_DETACH = 0x2

PR_SET_NAME = 15
PR_SET_DUMPABLE = 4


class KernelError(OSError):
    """A namespace or mount step failed; str() is a one-line explanation.

    Most such failures mean this machine or its settings cannot run vaults,
    hence the default exit code 5 (errors.UNSUPPORTED)."""

    code = 5

    def __str__(self):
        return self.strerror


_libc = None


def _libc_call(name, *args):
    """Call a libc function through ctypes, raising OSError on -1."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    func = getattr(_libc, name)
    result = func(*args)
    if result == -1:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, posix.strerror(err))
    return result


def _c_str(value):
    return None if value is None else lightos.fsencode(value)


def _unshare(flags):
    """unshare(2): posix.unshare on 3.12+, libc on 3.11.  Raises OSError."""
    if hasattr(posix, "unshare"):
        posix.unshare(flags)
    else:
        _libc_call("unshare", flags)


# --- creating the holder's namespace ---------------------------------------


def unshare_user_and_mount():
    """Give this process a new user and mount namespace."""
    flags = CLONE_NEWUSER | CLONE_NEWNS
    try:
        _unshare(flags)
    except OSError as exc:
        raise KernelError(
            exc.errno,
            f"cannot create a user namespace ({exc.strerror}); "
            "run 'nsshell doctor' to see why and how to enable it",
        ) from None


def map_self_one_to_one(uid, gid):
    """Map our uid/gid 1:1 into the new user namespace.

    The order is fixed by the kernel: setgroups must be denied before an
    unprivileged process may write gid_map, and all of it must happen before
    the process goes non-dumpable (afterwards /proc/self belongs to root).
    """
    try:
        _write_proc_self("setgroups", "deny")
        _write_proc_self("uid_map", f"{uid} {uid} 1")
        _write_proc_self("gid_map", f"{gid} {gid} 1")
    except OSError as exc:
        raise KernelError(
            exc.errno, f"cannot map the user into its namespace ({exc.strerror})"
        ) from None


def _write_proc_self(name, text):
    fd = posix.open(f"/proc/self/{name}", posix.O_WRONLY)
    try:
        posix.write(fd, text.encode())
    finally:
        posix.close(fd)


def _libc_quick(name, *args):
    """A libc call through _ctypes alone: the ctypes package costs more to
    import than the whole unlock path, and these calls sit on it.  A failure
    is repeated through ctypes, which reports errno."""
    global _libc_handle
    import _ctypes

    if _libc_handle is None:
        _libc_handle = _ctypes.dlopen(None, posix.RTLD_NOW)
    result = _ctypes.call_function(_ctypes.dlsym(_libc_handle, name), args)
    if result == -1:
        return _libc_call(name, *args)
    return result


_libc_handle = None


def make_undumpable():
    """Stop same-user processes from ptracing us, opening /proc/PID/ns/*,
    /proc/PID/fd/* or /proc/PID/mem, or walking /proc/PID/root, and stop the
    kernel from writing a core dump of us.  This is what keeps the holder
    unenterable."""
    _libc_quick("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)


def make_dumpable_again():
    """Undo make_undumpable in a child forked from a non-dumpable parent that
    must still write its own /proc/self/uid_map (NAMESPACE-FACTS 1)."""
    _libc_quick("prctl", PR_SET_DUMPABLE, 1, 0, 0, 0)


RLIMIT_CORE = 4
RLIM_INFINITY = (1 << 64) - 1
_saved_core_limit = None


def keep_secrets_out_of_core_dumps():
    """Before a passphrase enters this process: no core dump, no /proc/PID/mem,
    /proc/PID/fd or ptrace for other processes of the user (non-dumpable), and
    a core limit of 0 as well (so even fs.suid_dumpable=2 writes nothing).
    exec resets dumpability; restore_core_limit puts the limit back first."""
    global _saved_core_limit
    if _saved_core_limit is None:
        _saved_core_limit = _core_limit()
        _set_core_limit(0, _saved_core_limit[1])
    make_undumpable()


def restore_core_limit():
    """Give the command we exec next the core limit its caller had."""
    global _saved_core_limit
    if _saved_core_limit is not None:
        _set_core_limit(*_saved_core_limit)
        _saved_core_limit = None


def _core_limit():
    """(soft, hard) RLIMIT_CORE, read from /proc/self/limits (the resource
    module would be one more import on the unlock path)."""
    with open("/proc/self/limits", encoding="ascii") as f:
        for line in f:
            if line.startswith("Max core file size"):
                soft, hard = line.split()[4:6]
                return tuple(RLIM_INFINITY if v == "unlimited" else int(v) for v in (soft, hard))
    return (0, RLIM_INFINITY)


def _set_core_limit(soft, hard):
    import sys

    limits = soft.to_bytes(8, sys.byteorder) + hard.to_bytes(8, sys.byteorder)  # struct rlimit
    _libc_quick("setrlimit", RLIMIT_CORE, limits)


def lock_directory(path):
    """An fd holding an exclusive flock on directory path, or None if another
    open file holds one.  The fd is close-on-exec: the lock lasts exactly as
    long as the processes that own it, and never passes to what they exec."""
    fd = posix.open(path, posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        _libc_quick("flock", fd, LOCK_EX | LOCK_NB)  # not fcntl: one more import on the unlock path
    except BlockingIOError:
        posix.close(fd)
        return None
    except BaseException:
        posix.close(fd)
        raise
    return fd


LOCK_EX = 2
LOCK_NB = 4


def flock_owner(path):
    """pid of the process that took the flock on path (from /proc/locks), or None.

    That pid is the process that called flock; the lock itself lives as long
    as any process holding the open file (its forked children too)."""
    info = posix.stat(path)
    wanted = f"{posix.major(info.st_dev):02x}:{posix.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:  # waiters say "->"
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None


def set_process_name(name):
    """Name the thread (what ps and top show as comm), 15 bytes at most."""
    import ctypes

    _libc_call("prctl", PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def make_root_recursive_slave():
    """Mounts made on the host later still reach us; ours never reach the host,
    and we pin none of the host's mounts (private would)."""
    try:
        _libc_call("mount", None, b"/", None, MS_REC | MS_SLAVE, None)
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot make / a slave mount ({exc.strerror})") from None


def open_fuse_device():
    """Open /dev/fuse.  Must happen inside the user namespace that mounts it."""
    try:
        return posix.open("/dev/fuse", posix.O_RDWR | posix.O_CLOEXEC)
    except FileNotFoundError:
        raise KernelError(2, "/dev/fuse does not exist; load the fuse module (modprobe fuse)") from None
    except PermissionError:
        raise KernelError(
            13,
            "/dev/fuse is not accessible; as root run 'chmod 0666 /dev/fuse' "
            "(distributions ship it that way; run 'nsshell doctor')",
        ) from None


def mount_fuse(fuse_fd, mountpoint, source, subtype, uid, gid, max_read=None):
    """Mount a FUSE filesystem served through fuse_fd at mountpoint.

    max_read: the largest read the daemon takes in one request; give the
    value the daemon would pass when mounting itself (go-fuse: 128 KiB)."""
    options = f"fd={fuse_fd},rootmode=40000,user_id={uid},group_id={gid}"
    if max_read:
        options += f",max_read={max_read}"
    try:
        _libc_call(
            "mount",
            _c_str(source),
            _c_str(mountpoint),
            _c_str(f"fuse.{subtype}"),
            MS_NOSUID | MS_NODEV,
            options.encode(),
        )
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot mount FUSE at {mountpoint} ({exc.strerror})") from None


def mount_readonly_floor(mountpoint):
    """Mount an empty read-only tmpfs at mountpoint, to lie under the vault.

    If the vault is ever unmounted or lazily detached inside the namespace,
    sessions find this floor at the path instead of the host directory, and
    every write fails with EROFS instead of landing on disk in plaintext."""
    try:
        _libc_call(
            "mount",
            b"nsshell-floor",
            _c_str(mountpoint),
            b"tmpfs",
            MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
            b"size=4k,nr_inodes=16,mode=0500",
        )
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot mount a read-only floor at {mountpoint} ({exc.strerror})") from None


def unmount(mountpoint, detach=False):
    """Unmount; raises OSError (EBUSY while files are open)."""
    _libc_call("umount2", _c_str(mountpoint), MNT_DETACH if detach else 0)


def mount_entry(mountpoint, mountinfo="/proc/self/mountinfo"):
    """The (fstype, source) of the mount whose target is exactly mountpoint, or None."""
    target = _mountinfo_escape(mountpoint)
    found = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if fields[4] == target:
                sep = fields.index("-")
                found = (fields[sep + 1], fields[sep + 2])
    return found


def mount_id_at(path):
    """The id of the mount that path resolves to (as in mountinfo's first field).

    Opened with O_PATH, so no request reaches a FUSE daemon, even a hung one;
    the id comes from /proc/self/fdinfo."""
    fd = posix.open(path, posix.O_PATH | posix.O_CLOEXEC | posix.O_NOFOLLOW)
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    finally:
        posix.close(fd)
    raise OSError(0, "this kernel does not report mount ids in /proc/self/fdinfo")


def mount_table(mountinfo="/proc/self/mountinfo"):
    """Every mount as a dict: id, parent, root, target (unescaped), fstype, source."""
    table = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            table.append(
                {
                    "id": int(fields[0]),
                    "parent": int(fields[1]),
                    "root": _mountinfo_unescape(fields[3]),
                    "target": _mountinfo_unescape(fields[4]),
                    "fstype": fields[sep + 1],
                    "source": fields[sep + 2],
                }
            )
    return table


def _mountinfo_unescape(field):
    # The backslash last, so that an escaped backslash is never read as the start of another escape.
    for char, code in ((" ", "\\040"), ("\t", "\\011"), ("\n", "\\012"), ("\\", "\\134")):
        field = field.replace(code, char)
    return field


def _mountinfo_escape(path):
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
        path = path.replace(char, code)
    return path


# --- watching the mountpoint -------------------------------------------------

IN_MOVE_SELF = 0x00000800
IN_DELETE_SELF = 0x00000400
IN_UNMOUNT = 0x00002000
IN_IGNORED = 0x00008000
IN_NONBLOCK = posix.O_NONBLOCK
IN_CLOEXEC = posix.O_CLOEXEC


def watch_path_and_parents(path):
    """An inotify fd that becomes readable when path or any of its parents is
    moved or deleted (IN_MOVE_SELF, IN_DELETE_SELF).  Inotify watches inodes,
    not names: after a rename the watch still names the moved directory.

    Returns (fd, watched paths, skipped paths with the reason); a parent we
    may not read (another user's 0711 home) cannot be watched."""
    fd = _libc_call("inotify_init1", IN_NONBLOCK | IN_CLOEXEC)
    watched, skipped = [], []
    current = lightos.abspath(path)
    while True:
        try:
            _libc_call("inotify_add_watch", fd, _c_str(current), IN_MOVE_SELF | IN_DELETE_SELF)
            watched.append(current)
        except OSError as exc:
            if current == lightos.abspath(path):
                posix.close(fd)
                raise KernelError(exc.errno, f"cannot watch the mountpoint {path} ({exc.strerror})") from None
            skipped.append((current, exc.strerror))
        if current == "/":
            return fd, watched, skipped
        current = lightos.dirname(current)


def read_watch_events(fd):
    """Drain an inotify fd: the masks of the events read (struct inotify_event)."""
    masks = []
    while True:
        try:
            data = posix.read(fd, 4096)
        except BlockingIOError:
            return masks
        if not data:
            return masks
        offset = 0
        while offset + 16 <= len(data):
            mask = int.from_bytes(data[offset + 4 : offset + 8], _byteorder())
            name_len = int.from_bytes(data[offset + 12 : offset + 16], _byteorder())
            masks.append(mask)
            offset += 16 + name_len


def _byteorder():
    return "little" if _little_endian() else "big"


# --- nested namespaces ---------------------------------------------------------

NS_GET_PARENT = 0xB702  # _IO(0xb7, 0x2)


def user_namespace_descends_from(pid, ancestor_ino):
    """Whether pid's user namespace is the one with inode ancestor_ino or a
    namespace created inside it (at any depth): NS_GET_PARENT walks up until
    it reaches a namespace outside ours (EPERM) or the initial one."""
    import fcntl

    fd = posix.open(f"/proc/{pid}/ns/user", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        while True:
            if posix.fstat(fd).st_ino == ancestor_ino:
                return True
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:
                return False
            posix.close(fd)
            fd = parent
    finally:
        posix.close(fd)


# --- the vault's context: private tmp, shadows, hidden paths, network -------
# (nsshell.plan decides which of these run, in what order; see docs/context.md)


def open_path(path):
    """An O_PATH handle on path, to bind it back after something covers it."""
    return posix.open(path, posix.O_PATH | posix.O_CLOEXEC)


def mount_tmpfs(dest, mode=0o1777, size=None, readonly=False):
    """A fresh tmpfs at dest: memory (and swap) only, gone with the namespace."""
    options = f"mode={mode:o}" + (f",size={size}" if size else "")
    flags = MS_NOSUID | MS_NODEV | (MS_RDONLY if readonly else 0)
    try:
        _libc_call("mount", b"tmpfs", _c_str(dest), b"tmpfs", flags, options.encode())
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot mount a private tmpfs at {dest} ({exc.strerror})") from None


def bind_mount(source, dest, readonly=False):
    """Make dest show source (recursively), inside this namespace only.
    source may be /proc/self/fd/N of an open_path() handle."""
    try:
        _libc_call("mount", _c_str(source), _c_str(dest), None, MS_BIND | MS_REC, None)
        if readonly:
            # A bind ignores MS_RDONLY; it takes a remount of the new mount.
            # The flags the kernel locked on the original (mounted by the
            # host, outside our user namespace) must be repeated or it refuses.
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY | _locked_flags(dest)
            _libc_call("mount", None, _c_str(dest), None, flags, None)
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot bind {source} over {dest} ({exc.strerror})") from None


_STATVFS_TO_MS = ((posix.ST_NOSUID, MS_NOSUID), (posix.ST_NODEV, MS_NODEV), (posix.ST_NOEXEC, MS_NOEXEC),
                  (posix.ST_NOATIME, MS_NOATIME), (posix.ST_NODIRATIME, MS_NODIRATIME), (posix.ST_RELATIME, MS_RELATIME))


def _locked_flags(path):
    current = posix.statvfs(path).f_flag
    return sum(ms for st, ms in _STATVFS_TO_MS if current & st)


def unshare_network():
    """A network namespace of our own: only a loopback device, down until
    bring_up_loopback().  Needs the capabilities of our user namespace."""
    try:
        _unshare(CLONE_NEWNET)
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot create a network namespace ({exc.strerror})") from None


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def bring_up_loopback():
    """ip link set lo up, in the current network namespace."""
    import _socket
    import fcntl
    import struct

    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock.fileno(), SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock.fileno(), SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot bring up the loopback device ({exc.strerror})") from None
    finally:
        sock.close()


# --- joining ----------------------------------------------------------------


def join_namespaces(user_fd, mount_fd, net_fd=None):
    """setns into the holder's user namespace, then its mount namespace (and
    network namespace, for an offline vault).

    Must run in a single-threaded process.  setns resets the cwd to the
    namespace's root, so the caller chdirs back afterwards.
    """
    steps = [(user_fd, CLONE_NEWUSER, "user"), (mount_fd, CLONE_NEWNS, "mount")]
    if net_fd is not None:
        steps.append((net_fd, CLONE_NEWNET, "network"))
    for fd, flag, what in steps:
        try:
            _setns(fd, flag)
        except OSError as exc:
            raise KernelError(exc.errno, f"cannot join the vault's {what} namespace ({exc.strerror})") from None


def _setns(fd, flag):
    if hasattr(posix, "setns"):  # Python 3.12+
        posix.setns(fd, flag)
        return
    # On 3.11, the full ctypes package costs more to import than the rest of
    # the hot path together; its C core (_ctypes) can make the call alone.
    # It cannot report errno, so a failure is repeated through ctypes for that.
    import _ctypes

    setns = _ctypes.dlsym(_ctypes.dlopen(None, posix.RTLD_NOW), "setns")
    if _ctypes.call_function(setns, (fd, flag)) != 0:
        _libc_call("setns", fd, flag)


def unshare_mount_namespace():
    """A copy of the current mount namespace of our own (for `run --hide`:
    layers only this command sees).  Needs the capabilities that joining
    the vault's user namespace gives until exec."""
    try:
        _unshare(CLONE_NEWNS)
    except OSError as exc:
        raise KernelError(exc.errno, f"cannot make a mount namespace for this command ({exc.strerror})") from None


def namespace_id(kind, pid="self"):
    """The identity (inode) of a process's namespace, e.g. 'mnt:[4026532]'."""
    return posix.readlink(f"/proc/{pid}/ns/{kind}")


AT_EMPTY_PATH = 0x1000
MAX_HANDLE_SZ = 128


def namespace_file_handle(ns_fd):
    """(handle type, handle bytes) of the namespace ns_fd refers to, from
    name_to_handle_at(2).  Raises OSError (EOPNOTSUPP, EINVAL) on a kernel
    without file handles for namespaces."""
    import ctypes
    import struct

    header = struct.Struct("Ii")  # struct file_handle: handle_bytes, handle_type, then the handle
    buffer = ctypes.create_string_buffer(header.size + MAX_HANDLE_SZ)
    header.pack_into(buffer, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    _libc_call("name_to_handle_at", ns_fd, b"", buffer, ctypes.byref(mount_id), AT_EMPTY_PATH)
    size, handle_type = header.unpack_from(buffer, 0)
    return handle_type, buffer.raw[header.size : header.size + size]


def open_namespace_by_handle(handle_type, handle, nsfs_fd):
    """open_by_handle_at(2): an fd on the namespace that the handle names.
    nsfs_fd is any fd on the namespace filesystem (one of our own
    /proc/self/ns/* will do).  Raises OSError when the kernel refuses."""
    import ctypes
    import struct

    buffer = ctypes.create_string_buffer(struct.pack("Ii", len(handle), handle_type) + handle)
    return _libc_call("open_by_handle_at", nsfs_fd, buffer, posix.O_RDONLY | posix.O_CLOEXEC)


def in_child_user_namespace():
    """True when this process is not in the initial user namespace.

    The initial namespace maps the whole uid range; any user namespace a
    process of ours created maps a single uid.  Needs no privilege."""
    fd = posix.open("/proc/self/uid_map", posix.O_RDONLY | posix.O_CLOEXEC)
    try:
        mapping = posix.read(fd, 4096)  # bytes: a text file would load a codec on the hot path
    finally:
        posix.close(fd)
    return mapping.split() != [b"0", b"0", b"4294967295"]


def process_start_time(pid):
    """Start time of pid in clock ticks since boot, or None if it is gone.

    A pid plus its start time names a process for good: a reused pid has a
    different start time, so stale records never make us signal a stranger."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name can hold spaces and parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    return int(fields[19])


# --- file descriptors over unix sockets --------------------------------------


def send_with_fds(sock, data, fds):
    """Send bytes with file descriptors attached (SCM_RIGHTS)."""
    import _socket

    payload = b"".join(fd.to_bytes(4, "little" if _little_endian() else "big", signed=True) for fd in fds)
    ancillary = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, payload)] if fds else []
    sock.sendmsg([data], ancillary)


def recv_line_with_fds(sock, max_fds=4, limit=65536):
    """Read one newline-terminated message and every fd sent with it."""
    import _socket

    data = b""
    fds = []
    while not data.endswith(b"\n"):
        chunk, ancillary, _flags, _addr = sock.recvmsg(4096, _socket.CMSG_SPACE(4 * max_fds))
        for level, kind, payload in ancillary:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                usable = len(payload) - len(payload) % 4
                for i in range(0, usable, 4):
                    fds.append(int.from_bytes(payload[i : i + 4], "little" if _little_endian() else "big", signed=True))
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            break
    for fd in fds:
        posix.set_inheritable(fd, False)
    return data, fds


def _little_endian():
    import sys

    return sys.byteorder == "little"


def with_unix_path(method, path):
    """sock.bind or sock.connect on path, also when path is longer than the
    108 bytes sun_path allows: then through the cwd, with the name alone."""
    if len(lightos.fsencode(path)) < 100:
        return method(path)
    here = posix.open(".", posix.O_RDONLY | posix.O_DIRECTORY | posix.O_CLOEXEC)
    try:
        posix.chdir(lightos.dirname(path))
        return method(lightos.basename(path))
    finally:
        posix.fchdir(here)
        posix.close(here)


def peer_credentials(sock):
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    import _socket
    import sys

    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # struct ucred: three ints
    return tuple(int.from_bytes(raw[i : i + 4], sys.byteorder, signed=True) for i in (0, 4, 8))


def signal_on_fuse_requests(fuse_fd, owner_pid):
    """Have the kernel send SIGIO to owner_pid whenever it queues a request
    on this FUSE connection (O_ASYNC: fuse's fasync on its input queue).

    The open file is the one gocryptfs reads; the flag and the owner only add
    a signal, they change nothing for gocryptfs.  Every use of the vault's
    files is a FUSE request, so this measures activity without reading the
    backend's /proc/PID/io, which a non-dumpable gocryptfs does not allow."""
    import fcntl

    fcntl.fcntl(fuse_fd, fcntl.F_SETOWN, owner_pid)
    fcntl.fcntl(fuse_fd, fcntl.F_SETFL, fcntl.fcntl(fuse_fd, fcntl.F_GETFL) | posix.O_ASYNC)


def pidfd_open(pid):
    """A pollable handle on a process that cannot be fooled by PID reuse."""
    return posix.pidfd_open(pid)


def signal_process(pid, start_time, signum):
    """Send signum to pid only if it is still the process that started at
    start_time (a pidfd, checked after opening it: no pid-reuse race).
    Needs only the same uid, not dumpability.  Returns whether it was sent."""
    import _signal

    try:
        pidfd = posix.pidfd_open(pid)
    except OSError:
        return False
    try:
        if process_start_time(pid) != start_time:
            return False
        _signal.pidfd_send_signal(pidfd, signum)
        return True
    except OSError:
        return False
    finally:
        posix.close(pidfd)
