"""``nsshell doctor``: can this machine run vaults, and if not, what to do."""

import dataclasses
import os
import subprocess
import sys
import tempfile

from nsshell import kernel, paths, registry
from nsshell.errors import NsshellError


@dataclasses.dataclass
class Check:
    title: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def as_dict(self):
        return dataclasses.asdict(self)


def _read(path):
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def check_python():
    ok = sys.version_info >= (3, 11)
    return Check("python", "ok" if ok else "fail", sys.version.split()[0], "install Python 3.11 or newer")


def check_gocryptfs():
    from nsshell.backend import BACKEND

    try:
        binary = BACKEND.binary()
    except NsshellError:
        return Check("gocryptfs", "fail", "not installed", "sudo apt install gocryptfs")
    out = subprocess.run([binary, "-version"], capture_output=True, text=True).stdout.split()
    version = out[1].rstrip(";") if len(out) > 1 else "unknown"
    major_minor = tuple(int("".join(ch for ch in x if ch.isdigit()) or 0) for x in version.lstrip("v").split(".")[:2])
    if major_minor and major_minor < (2, 0):
        return Check("gocryptfs", "fail", f"{version} at {binary} is too old", "install gocryptfs 2.0 or newer")
    if major_minor and major_minor < HARDLINK_SIZE_FIXED:
        return Check(
            "gocryptfs", "warn",
            f"{version} at {binary} reports a wrong file size for about a second after `ln` "
            "(rfjakob/gocryptfs#724), so `git clone` of a local repository inside a vault fails with "
            "'hardlink different from source'",
            "inside a vault use `git clone --no-hardlinks`, or install gocryptfs 2.4 or newer",
        )
    return Check("gocryptfs", "ok", f"{version} at {binary}")


# gocryptfs 2.4.0 fixed the stale size after a hard link (rfjakob/gocryptfs#724).
HARDLINK_SIZE_FIXED = (2, 4)


def check_fuse_device():
    if not os.path.exists("/dev/fuse"):
        return Check("/dev/fuse", "fail", "missing", "sudo modprobe fuse (and install fuse3)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return Check(
            "/dev/fuse", "fail", "not readable and writable by you",
            "sudo chmod 0666 /dev/fuse (distributions ship it so; minimal systems without udev do not)",
        )
    return Check("/dev/fuse", "ok", "accessible")


def _apparmor_fix():
    """The exact commands: a profile that allows user namespaces for the
    real file of the Python running nsshell (AppArmor does not follow a
    venv's symlink), or the blunt sysctl."""
    python = os.path.realpath(sys.executable)
    profile = f"abi <abi/4.0>,\\ninclude <tunables/global>\\nprofile nsshell {python} flags=(unconfined) {{\\n  userns,\\n}}\\n"
    return (
        f"printf '{profile}' | sudo tee /etc/apparmor.d/nsshell && sudo apparmor_parser -r /etc/apparmor.d/nsshell "
        f"(this lets every program run by {python} create user namespaces), "
        "or: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0 (every program)"
    )


def check_apparmor():
    value = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if value == "1":
        return Check(
            "AppArmor user namespace restriction", "fail",
            "kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 23.10+) blocks unprivileged user namespaces",
            _apparmor_fix(),
        )
    return Check("AppArmor user namespace restriction", "ok", "not restricting" if value is not None else "not present")


def check_user_namespaces():
    limit = _read("/proc/sys/user/max_user_namespaces")
    legacy = _read("/proc/sys/kernel/unprivileged_userns_clone")
    if limit == "0":
        return Check("user namespaces", "fail", "user.max_user_namespaces=0", "sudo sysctl user.max_user_namespaces=15000")
    if legacy == "0":
        return Check(
            "user namespaces", "fail", "kernel.unprivileged_userns_clone=0",
            "sudo sysctl kernel.unprivileged_userns_clone=1",
        )
    result = _probe_in_child(_probe_fuse_mount)
    if result is None:
        return Check("user namespaces + FUSE", "ok", "an unprivileged namespace can mount FUSE")
    return Check("user namespaces + FUSE", "fail", result, "fix the failures above, then run 'nsshell doctor' again")


def _probe_fuse_mount():
    with tempfile.TemporaryDirectory(prefix="nsshell-doctor-") as target:
        uid, gid = os.getuid(), os.getgid()
        kernel.unshare_user_and_mount()
        kernel.map_self_one_to_one(uid, gid)
        kernel.make_root_recursive_slave()
        fd = kernel.open_fuse_device()
        kernel.mount_fuse(fd, target, "nsshell-doctor", "probe", uid, gid)
        kernel.unmount(target, detach=True)


def _probe_in_child(step):
    """Run step in a forked child (namespaces are per process); None on success."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            step()
            os._exit(0)
        except BaseException as exc:  # report any failure to the parent
            os.write(write_end, str(exc).encode()[:4000])
            os._exit(1)
    os.close(write_end)
    message = b""
    while chunk := os.read(read_end, 4096):
        message += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        return None
    return message.decode(errors="replace") or "the probe failed"


def check_runtime_dir():
    if not os.environ.get("XDG_RUNTIME_DIR"):
        note = f"XDG_RUNTIME_DIR is unset; using {paths.runtime_base()}"
        try:
            paths.runtime_dir()
        except NsshellError as exc:
            return Check("runtime directory", "fail", str(exc))
        return Check("runtime directory", "warn", note, "log in through a systemd/elogind session, or set XDG_RUNTIME_DIR")
    try:
        return Check("runtime directory", "ok", paths.runtime_dir())
    except NsshellError as exc:
        return Check("runtime directory", "fail", str(exc))


def check_registry():
    try:
        vaults = registry.load()
    except NsshellError as exc:
        return Check("registry", "fail", str(exc))
    registry.sync_names(vaults)
    return Check("registry", "ok", f"{paths.registry_file()} ({len(vaults)} vault{'s' if len(vaults) != 1 else ''})")


def check_ptrace_scope():
    """Yama restricts attach-mode access (ptrace, /proc/PID/mem, pidfd_getfd)
    to a process's ancestors; it never restricts opening /proc/PID/fd/N."""
    value = _read("/proc/sys/kernel/yama/ptrace_scope")
    if value is None:
        return Check(
            "ptrace restriction (Yama)", "warn",
            "this kernel has no Yama, so 'sysctl kernel.yama.ptrace_scope' cannot be set: your other processes may "
            "ptrace each other; only a hardened gocryptfs keeps them from its memory (see the check below)",
            "install the hardened gocryptfs (below); a kernel built with Yama (CONFIG_SECURITY_YAMA) would add ptrace_scope",
        )
    if value == "0":
        return Check(
            "ptrace restriction (Yama)", "warn",
            "kernel.yama.ptrace_scope=0: your other processes may ptrace each other (and read process memory)",
            "sudo sysctl kernel.yama.ptrace_scope=1 (Ubuntu's default; limits ptrace, /proc/PID/mem and pidfd_getfd "
            "to ancestors; it does not stop /proc/PID/fd opens)",
        )
    return Check("ptrace restriction (Yama)", "ok", f"kernel.yama.ptrace_scope={value}: ptrace limited to ancestors")


def check_backend_protection():
    """Whether the key in gocryptfs's memory is out of reach of the user's other processes."""
    from nsshell.backend import BACKEND, HARDEN_COMMANDS, HARDENED_PATH, OVERRIDE_VARIABLE, is_protected

    title = "gocryptfs memory protection"
    try:
        binary = BACKEND.binary()
    except NsshellError as exc:
        return Check(title, "fail", str(exc))
    if is_protected(binary):
        detail = (
            f"{binary} is execute-only (root, mode {os.stat(binary).st_mode & 0o7777:04o}): it runs non-dumpable, so "
            "your other processes cannot read its memory (the master key), environment or fds, nor ptrace it"
        )
        stale = _version_differs(binary)
        if stale:
            return Check(title, "warn", f"{detail}; but {stale}", f"refresh it: {HARDEN_COMMANDS}")
        return Check(title, "ok", detail)
    where = f"{OVERRIDE_VARIABLE}={binary}" if os.environ.get(OVERRIDE_VARIABLE) else binary
    return Check(
        title, "warn",
        f"{where} is readable by you, so it runs dumpable: while a vault is open your other processes can read its "
        f"memory (the master key) where ptrace is unrestricted, and its fds and environment always",
        f"have an admin install an execute-only copy at {HARDENED_PATH}, which nsshell then uses: {HARDEN_COMMANDS}",
    )


def _version_differs(hardened):
    """A sentence if the hardened copy is another version than gocryptfs in PATH."""
    from nsshell.backend import _which

    packaged = _which("gocryptfs")
    if not packaged or os.path.realpath(packaged) == os.path.realpath(hardened):
        return None
    versions = []
    for binary in (hardened, packaged):
        try:
            out = subprocess.run([binary, "-version"], capture_output=True, text=True, timeout=10).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return None
        versions.append(out[1].rstrip(";") if len(out) > 1 else "unknown")
    if versions[0] == versions[1]:
        return None
    return f"it is gocryptfs {versions[0]} while {packaged} is {versions[1]}"


def check_protections():
    """One line that says which of the passphrase and key protections are on."""
    from nsshell.backend import BACKEND, is_protected

    try:
        hardened = is_protected(BACKEND.binary())
    except NsshellError:
        hardened = False
    yama = _read("/proc/sys/kernel/yama/ptrace_scope")
    on = [
        "passphrase carried over sockets only (no pipe another process can open through /proc)",
        "nsshell non-dumpable with no core dump while it holds a passphrase",
        "gocryptfs started with a scrubbed environment and none of your fds",
    ]
    off = []
    (on if hardened else off).append("gocryptfs execute-only and non-dumpable")
    (on if yama not in (None, "0") else off).append("Yama ptrace restriction")
    detail = "on: " + "; ".join(on) + (". off: " + "; ".join(off) if off else "")
    return Check("protections", "ok" if not off else "warn", detail, "see the two checks above" if off else "")


def _real_uid(pid):
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    return None


def check_runtime_dirs_in_use():
    """Vaults open from two runtime directories mean terminals disagree on
    XDG_RUNTIME_DIR; each vault still has one backend (its cipher directory
    is locked), but a terminal sees only the vaults of its own directory."""
    here = paths.runtime_base()
    in_use = {}
    uid = os.getuid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if _real_uid(entry) != uid:  # holders are non-dumpable: /proc/PID itself belongs to root
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"nsshell.holder" not in argv:
                continue
            at = argv.index(b"nsshell.holder")
            directory = os.fsdecode(argv[at + 2])
            if os.stat(directory).st_uid != uid:
                continue
            in_use.setdefault(directory, set()).add(os.fsdecode(argv[at + 1]))
        except (OSError, IndexError):
            continue
    title = "runtime directories"
    if len(in_use) < 2 and (not in_use or here in in_use):
        return Check(title, "ok", f"vaults open from {here}" if in_use else "no vault open")
    listing = "; ".join(f"{d} ({', '.join(sorted(names))})" for d, names in sorted(in_use.items()))
    return Check(
        title, "warn",
        f"vaults are open from {len(in_use)} runtime director{'ies' if len(in_use) != 1 else 'y'}: {listing}; "
        f"this terminal uses {here} and sees only the vaults open there",
        "set XDG_RUNTIME_DIR the same in every terminal (log in through systemd-logind or elogind); "
        "'nsshell lock NAME' finds a vault wherever it is open",
    )


def check_namespace_handles():
    """Can a process of ours open a non-dumpable process's namespace through
    a file handle (open_by_handle_at(2) on nsfs)?  Tried for real against a
    throwaway namespace holder, not looked up by kernel version."""
    title = "namespace file handles"
    verdict, detail = probe_namespace_handles()
    if verdict == "opened":
        return Check(
            title, "warn",
            f"this kernel ({os.uname().release}) let this process open the mount namespace of a non-dumpable "
            f"test process through open_by_handle_at(2) ({detail}). So while a vault is open, any process running "
            "as you can enter its namespace and read the plaintext, with no session and no ptrace; "
            "other users cannot",
            "a kernel that refuses open_by_handle_at(2) on namespaces that a non-dumpable process holds; "
            "no nsshell setting can avoid it, because the vault's user namespace is owned by your uid (see SECURITY.md)",
        )
    if verdict == "refused":
        return Check(title, "ok", f"opening a non-dumpable test namespace by file handle was refused ({detail})")
    return Check(title, "warn", f"could not test: {detail}", "run 'nsshell doctor' again; see the failures above")


def probe_namespace_handles():
    """("opened" | "refused" | "unknown", detail).

    A forked child unshares a user+mount namespace, takes the file handle of
    its mount namespace, goes non-dumpable (as a vault's keeper does) and
    reports the handle.  This process then tries open_by_handle_at(2) with
    it; "opened" only if the fd it gets is that very namespace."""
    report_r, report_w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(report_r)
        os.close(release_w)
        try:
            uid, gid = os.getuid(), os.getgid()
            kernel.unshare_user_and_mount()
            kernel.map_self_one_to_one(uid, gid)
            ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            try:
                handle_type, handle = kernel.namespace_file_handle(ns_fd)
                message = f"HANDLE {handle_type} {handle.hex()} {os.fstat(ns_fd).st_ino}"
            except OSError as exc:
                message = f"NOHANDLE {exc.strerror}"
            kernel.make_undumpable()
            os.write(report_w, message.encode() + b"\n")
            os.read(release_r, 1)  # stay alive, non-dumpable, while the parent tries
            os._exit(0)
        except BaseException as exc:  # report any failure to the parent
            os.write(report_w, f"FAILED {exc}".replace("\n", " ").encode()[:4000] + b"\n")
            os._exit(1)
    os.close(report_w)
    os.close(release_r)
    try:
        message = b""
        while not message.endswith(b"\n") and (chunk := os.read(report_r, 4096)):
            message += chunk
        return _try_namespace_handle(pid, message.decode(errors="replace").strip())
    finally:
        os.close(report_r)
        os.close(release_w)
        os.waitpid(pid, 0)


def _try_namespace_handle(pid, message):
    kind, _, rest = message.partition(" ")
    if kind == "NOHANDLE":
        return "refused", f"this kernel has no file handles for namespaces: {rest}"
    if kind != "HANDLE":
        return "unknown", rest or "the probe's namespace could not be set up"
    handle_type, handle_hex, inode = rest.split()
    try:  # the premise: the front door is shut, as for a vault's keeper
        os.close(os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC))
        return "unknown", "a non-dumpable process's /proc/PID/ns/mnt could be opened, so the probe proves nothing"
    except OSError:
        pass
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        opened = kernel.open_namespace_by_handle(int(handle_type), bytes.fromhex(handle_hex), own)
    except OSError as exc:
        return "refused", exc.strerror
    finally:
        os.close(own)
    try:
        if os.fstat(opened).st_ino != int(inode):
            return "unknown", "open_by_handle_at(2) returned a different namespace"
    finally:
        os.close(opened)
    return "opened", f"mnt:[{inode}]"


def check_autolock():
    """Whether vaults can lock on suspend, screen lock and logout (nsshell.autolock)."""
    try:
        from nsshell import autolock

        status, detail, fix = autolock.availability()
    except ImportError as exc:
        return Check("auto-lock", "warn", f"unavailable: {exc}", "pip install jeepney (nsshell depends on it)")
    return Check("auto-lock", status, detail, fix)


def check_session_bus(environ=None):
    """The vaults' own session bus (nsshell.sessionbus, docs/gui.md): is
    dbus-daemon there, and can the host's bus be hidden from vaults?"""
    from nsshell import sessionbus

    environ = os.environ if environ is None else environ
    daemon = sessionbus.find_program("dbus-daemon", environ)
    if daemon is None:
        return Check("session bus", "warn",
                     'dbus-daemon is not installed: programs in a vault with dbus = "vault" (the default) get no session bus',
                     'install it (Debian: apt install dbus-daemon), or set dbus = "host" for the vault (docs/gui.md)')
    address = environ.get("DBUS_SESSION_BUS_ADDRESS", "")
    if any(t in address for t in ("unix:abstract=", "unix:tmpdir=")):
        return Check("session bus", "warn",
                     f"{daemon}; the host's session bus is an abstract socket ({address.split(',')[0]}), which "
                     "programs in a vault can still reach unless the vault is offline",
                     "use a desktop that puts the bus at $XDG_RUNTIME_DIR/bus (dbus-user-session), or offline = true")
    return Check("session bus", "ok", f"{daemon}; vaults get their own bus, and the host's is hidden in them (docs/gui.md)")


def run_checks():
    return [
        check_python(),
        check_gocryptfs(),
        check_fuse_device(),
        check_apparmor(),
        check_user_namespaces(),
        check_runtime_dir(),
        check_registry(),
        check_runtime_dirs_in_use(),
        check_ptrace_scope(),
        check_backend_protection(),
        check_protections(),
        check_namespace_handles(),
        check_autolock(),
        check_session_bus(),
    ]
