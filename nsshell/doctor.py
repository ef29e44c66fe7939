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
    return Check("gocryptfs", "ok", f"{version} at {binary}")


def check_fuse_device():
    if not os.path.exists("/dev/fuse"):
        return Check("/dev/fuse", "fail", "missing", "sudo modprobe fuse (and install fuse3)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return Check(
            "/dev/fuse", "fail", "not readable and writable by you",
            "sudo chmod 0666 /dev/fuse (distributions ship it so; minimal systems without udev do not)",
        )
    return Check("/dev/fuse", "ok", "accessible")


def check_apparmor():
    value = _read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
    if value == "1":
        return Check(
            "AppArmor user namespace restriction", "fail",
            "kernel.apparmor_restrict_unprivileged_userns=1 (Ubuntu 23.10+) blocks unprivileged user namespaces",
            "install an AppArmor profile that allows userns for nsshell's python (see docs/install.md in the nsshell sources), "
            "or: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0",
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
    value = _read("/proc/sys/kernel/yama/ptrace_scope")
    if value in (None, "0"):
        detail = "Yama is not active" if value is None else "kernel.yama.ptrace_scope=0"
        return Check(
            "ptrace restriction", "warn",
            f"{detail}: while a vault is open, your other processes can read gocryptfs's memory (and its key)",
            "sudo sysctl kernel.yama.ptrace_scope=1 (Ubuntu's default); see SECURITY.md",
        )
    return Check("ptrace restriction", "ok", f"kernel.yama.ptrace_scope={value}")


def run_checks():
    return [
        check_python(),
        check_gocryptfs(),
        check_fuse_device(),
        check_apparmor(),
        check_user_namespaces(),
        check_runtime_dir(),
        check_registry(),
        check_ptrace_scope(),
    ]
