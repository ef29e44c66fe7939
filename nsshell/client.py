"""Talking to a vault's holder: the bottom of the hot path of ``nsshell run``/``enter``.

This module is the low level: the holder's socket, and joining its
namespaces.  nsshell.unlock (the slow path) uses it; nsshell.inside, above
both, runs a command in a vault.  One round trip and no heavy imports: this
module imports only built-in modules (posix, not os: nsshell.lightos says
why) and the light nsshell modules; ``_socket`` is the C module without the
enum-heavy ``socket`` wrapper.
"""

import posix

from nsshell import errors, kernel, lightos, paths
from nsshell.errors import CONFLICT, FAILURE, NsshellError


def connect(name, base=None):
    """A connected socket to the vault's holder, or None if it is not open."""
    import _socket

    path = paths.socket_path(name, base)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        kernel.with_unix_path(sock.connect, path)
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        return None
    except OSError:
        sock.close()
        raise
    return sock


class HolderNotAnswering(NsshellError):
    """The socket accepted the request, but no reply came in time.  Never
    "not open": something holds the vault (nsshell.unlock.lock then reaches
    it through its state record)."""


def request(name, line, base=None, max_fds=0, timeout=10.0):
    """Send one request line; return (reply text, fds), or None if not open.

    An empty reply means the holder closed on us: it is locking right now.
    No reply within timeout raises HolderNotAnswering."""
    sock = connect(name, base)
    if sock is None:
        return None
    try:
        sock.settimeout(timeout)
        sock.sendall(line.encode() + b"\n")
        data, fds = kernel.recv_line_with_fds(sock, max_fds=max_fds, limit=1 << 20)
    except (ConnectionResetError, BrokenPipeError):
        return None
    except TimeoutError:
        raise HolderNotAnswering(
            f"the holder of vault {name!r} did not answer within {timeout:g} s; "
            f"'nsshell lock {name} --force' ends it and its sessions",
            FAILURE,
        ) from None
    finally:
        sock.close()
    text = data.decode(errors="replace").rstrip("\n")
    if not text:
        for fd in fds:
            posix.close(fd)
        return None
    if text.startswith("ERR "):
        for fd in fds:
            posix.close(fd)
        raise errors.from_line(text)
    return text, fds


def join(name, base=None):
    """(mountpoint, history mode, [user_ns_fd, mount_ns_fd, net_ns_fd if
    offline], session bus: "vault", "host" or "none") of an open vault, or None."""
    reply = request(name, "JOIN", base, max_fds=3)
    if reply is None:
        return None
    text, fds = reply
    if not text.startswith("OK ") or len(fds) not in (2, 3):
        for fd in fds:
            posix.close(fd)
        raise NsshellError(f"the holder of vault {name!r} sent an unexpected reply", FAILURE)
    history, _, mountpoint = text[3:].partition(" ")
    bus = "host"
    if mountpoint.startswith("bus="):  # a mountpoint is absolute: never "bus=..."
        bus, _, mountpoint = mountpoint[4:].partition(" ")
    return mountpoint, history, fds, bus


def current_directory():
    try:
        return posix.getcwd()
    except FileNotFoundError:
        return paths.home()  # the cwd was deleted; the shell would say the same


def enter_namespaces(name, fds):
    """setns into the vault (fds from join()), unless we are in it already."""
    user_fd, mount_fd = fds[:2]
    try:
        if posix.fstat(mount_fd).st_ino == posix.stat("/proc/self/ns/mnt").st_ino:
            return
        if kernel.in_child_user_namespace():
            current = lightos.getenv("NSSHELL_VAULT")
            where = f"vault {current!r}" if current else "another user namespace (a container or another vault)"
            raise NsshellError(
                f"cannot enter vault {name!r} from inside {where}; leave it first (vault leave / exit)", CONFLICT
            )
        kernel.join_namespaces(user_fd, mount_fd, *fds[2:])
    finally:
        for fd in fds:
            posix.close(fd)
