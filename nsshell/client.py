"""Talking to a vault's holder, and the hot path of ``nsshell run``/``enter``.

Running a command in an open vault is: connect to the holder's socket, ask
to JOIN, receive its namespace fds, setns into them, chdir back, exec.  One
round trip and no heavy imports: this module imports only os, sys and the
light nsshell modules; ``_socket`` is the C module without the enum-heavy
``socket`` wrapper.  Everything slow (registry, passphrase, starting a
holder) lives in nsshell.unlock and is imported only when the vault is locked.
"""

import os
import sys

from nsshell import errors, kernel, paths
from nsshell.errors import CANNOT_EXECUTE, COMMAND_NOT_FOUND, CONFLICT, FAILURE, NsshellError
from nsshell.names import check_name


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
            os.close(fd)
        return None
    if text.startswith("ERR "):
        for fd in fds:
            os.close(fd)
        raise errors.from_line(text)
    return text, fds


def join(name, base=None):
    """(mountpoint, history mode, user_ns_fd, mount_ns_fd) of an open vault, or None."""
    reply = request(name, "JOIN", base, max_fds=2)
    if reply is None:
        return None
    text, fds = reply
    if not text.startswith("OK ") or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        raise NsshellError(f"the holder of vault {name!r} sent an unexpected reply", FAILURE)
    history, _, mountpoint = text[3:].partition(" ")
    return mountpoint, history, fds[0], fds[1]


def _current_directory():
    try:
        return os.getcwd()
    except FileNotFoundError:
        return paths.home()  # the cwd was deleted; the shell would say the same


def enter_namespaces(name, user_fd, mount_fd):
    """setns into the vault, unless we are in it already."""
    try:
        if os.fstat(mount_fd).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
            return
        if kernel.in_child_user_namespace():
            current = os.environ.get("NSSHELL_VAULT")
            where = f"vault {current!r}" if current else "another user namespace (a container or another vault)"
            raise NsshellError(
                f"cannot enter vault {name!r} from inside {where}; leave it first (vault leave / exit)", CONFLICT
            )
        kernel.join_namespaces(user_fd, mount_fd)
    finally:
        os.close(user_fd)
        os.close(mount_fd)


def exec_inside(name, argv, extra_env=None, passphrase_source=None, session=False):
    """Replace this process by argv running inside vault name.  Returns only
    by raising NsshellError.

    session: argv is the session's interactive shell (``enter``): also tell
    it its own pid, so that ``vault leave`` closes only that shell."""
    check_name(name)
    cwd = _current_directory()
    base = paths.runtime_dir()
    joined = join(name, base)
    if joined is None:
        from nsshell import unlock

        unlock.ensure_open(name, passphrase_source)
        joined = join(name, base)
        if joined is None:
            raise NsshellError(f"vault {name!r} locked again before the command could start; try again", FAILURE)
    mountpoint, history, user_fd, mount_fd = joined
    enter_namespaces(name, user_fd, mount_fd)
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir(mountpoint)
        sys.stderr.write(f"nsshell: {cwd} is not reachable inside the vault; starting in {mountpoint}\n")
    env = dict(os.environ)
    env["NSSHELL_VAULT"] = name
    env["NSSHELL_MOUNTPOINT"] = mountpoint
    if extra_env:
        env.update(extra_env)
    if session:
        env["NSSHELL_SHELL_PID"] = str(os.getpid())  # exec keeps the pid
    else:
        env.pop("NSSHELL_SHELL_PID", None)  # a shell started by `run` is not the session's
    # Every process inside learns where shells keep history (a `run NAME --
    # bash -i` as much as `enter`).  <mountpoint>/.nsshell also marks the
    # vault: prompts test for it to tell a live vault from a bare mountpoint.
    env["NSSHELL_HISTORY"] = history
    env.pop("NSSHELL_HISTDIR", None)
    marker = os.path.join(mountpoint, ".nsshell")
    try:
        os.mkdir(marker, 0o700)
    except FileExistsError:
        pass
    except OSError:
        if history == "vault":
            history = env["NSSHELL_HISTORY"] = "off"  # never fall back to the outer history
    if history == "vault":
        env["NSSHELL_HISTDIR"] = marker
    kernel.restore_core_limit()  # set to 0 while a passphrase was here; exec resets dumpability
    try:
        os.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise NsshellError(f"{argv[0]}: command not found", COMMAND_NOT_FOUND) from None
    except PermissionError:
        raise NsshellError(f"{argv[0]}: permission denied", CANNOT_EXECUTE) from None
    except OSError as exc:
        raise NsshellError(f"{argv[0]}: {exc.strerror}", CANNOT_EXECUTE) from None
