"""Opening and closing vaults: the slow path.

Opening happens under a per-vault lock file in the runtime directory, so two
commands racing to unlock one vault end with one holder and one mount.
Inside the lock, stale state from a crash (a dead holder's socket, a backend
that outlived its holder, a record whose pid now belongs to a stranger) is
cleaned up first, without user action and without touching other vaults.
"""

import fcntl
import marshal
import os
import sys
import time

from nsshell import client, errors, kernel, paths, registry, sessionbus
from nsshell.backend import BACKEND
from nsshell.errors import BAD_PASSPHRASE, CONFLICT, FAILURE, UNSAFE, UNSUPPORTED, NsshellError
from nsshell.holder import LOCK_SIGNAL, RECREATE_SOCKET_SIGNAL, open_elsewhere_error, runtime_dir_serving
from nsshell.kernel import process_start_time
from nsshell.passphrase import PassphraseSource

READY_TIMEOUT = 180.0  # scrypt is slow on purpose, and a passphrase may still be typed
HOLDER_EXIT_TIMEOUT = 30.0  # after its ERR line the holder only exits; generous, against a hang

PASSPHRASE_ATTEMPTS = 3
# How long to wait for a holder that is locking right now: the longest lock is
# 2 x holder.END_SESSIONS_GRACE (10 s) with sessions, then up to 3 x
# holder.BACKEND_EXIT_GRACE (5 s) for gocryptfs, plus room on a loaded machine.
STOPPING_TIMEOUT = 50.0
NOT_ANSWERING_TIMEOUT = 15.0  # how long a holder that neither answers nor was told to lock gets


class VaultLock:
    """flock on NAME.lock; removed on release.

    Removing a lock file that others wait on is safe only if every waiter
    checks, once it holds the lock, that the file it locked is still the one
    at the path; otherwise it retries with the new file."""

    def __init__(self, name, base):
        self.path = paths.lock_path(name, base)
        self.fd = None

    def __enter__(self):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:  # a planted symlink (ELOOP), a full runtime dir (ENOSPC)
                raise paths.runtime_file_error(self.path, exc) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    self.fd = fd
                    return self
            except FileNotFoundError:
                pass
            os.close(fd)

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def read_state(name, base):
    try:
        with open(paths.state_path(name, base), encoding="utf-8") as f:
            text = f.read()
    except (OSError, ValueError):
        return None
    import json  # only when a record exists: json pulls in re, and a locked vault has none

    try:
        state = json.loads(text)
    except ValueError:
        return None
    # A record that parses but is not ours (truncated, edited, another
    # version's) is as stale as a missing one.
    return state if isinstance(state, dict) else None


def _alive(record):
    """Whether a [pid, start_time] record still names the same process."""
    if not record or not isinstance(record, list) or len(record) != 2:
        return False
    pid, started = record
    return isinstance(pid, int) and pid > 0 and process_start_time(pid) == started


def holder_alive(name, base):
    """Whether the holder that last served name is still running (opening or locking)."""
    state = read_state(name, base)
    return bool(state) and _alive(state.get("supervisor"))


def wait_for_holder_to_stop(name, base, timeout=STOPPING_TIMEOUT):
    """A holder whose socket does not answer may be locking right now, or
    still opening for a command that was killed, or have lost its socket file
    (its keeper makes it again, at once when asked): wait until it stops
    (True) or serves (False)."""
    deadline = time.monotonic() + timeout
    nudged = None
    while True:
        state = read_state(name, base)
        if state is None or not _alive(state.get("supervisor")):
            return True
        sock = client.connect(name, base)
        if sock is not None:
            sock.close()
            return False  # it is serving after all (an unlock finished, or the socket is back)
        now = time.monotonic()
        if now >= deadline:
            raise _holder_stuck(name, state)
        if nudged is None or now - nudged >= 1.0:
            _signal_role(state, "keeper", RECREATE_SOCKET_SIGNAL)
            nudged = now
        time.sleep(0.02)


def _signal_role(state, role, signum):
    record = state.get(role)
    return _alive(record) and kernel.signal_process(record[0], record[1], signum)


def _holder_stuck(name, state):
    """Trying again cannot help here: say which processes, and what ends them."""
    pids = " ".join(str(state[role][0]) for role in ("supervisor", "keeper", "backend") if _alive(state.get(role)))
    return NsshellError(
        f"vault {name!r} is held by nsshell processes that neither answer nor stop (pids {pids}); "
        f"run 'nsshell lock {name} --force', and if that fails too, 'kill -KILL {pids}'",
        FAILURE,
    )


def clear_stale(name, base):
    """Remove what a crashed holder left behind.  Only processes whose pid
    *and* start time match the record are signalled."""
    state = read_state(name, base) or {}
    for role in ("backend", "keeper", "supervisor"):
        record = state.get(role)
        if _alive(record):
            _terminate(record[0])
    for path in (paths.socket_path(name, base), paths.state_path(name, base), paths.log_path(name, base)):
        try:
            os.unlink(path)
        except (FileNotFoundError, IsADirectoryError):
            pass  # a directory was never ours: whoever made it removes it


def _terminate(pid):
    import signal

    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            if process_start_time(pid) is None or _is_zombie(pid):
                return
            time.sleep(0.02)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
        return raw[raw.rindex(b")") + 2 : raw.rindex(b")") + 3] == b"Z"
    except OSError:
        return True


def preflight(vault):
    """Everything we can check before asking for a passphrase."""
    BACKEND.binary()
    if not os.path.isdir(vault.cipher_dir):
        raise NsshellError(
            f"cipher directory {vault.cipher_dir} of vault {vault.name!r} is missing; restore it from a backup "
            "or fix the path in the registry",
            FAILURE,
        )
    if not BACKEND.is_cipher_dir(vault.cipher_dir):
        raise NsshellError(f"{vault.cipher_dir} is not a gocryptfs directory (no gocryptfs.conf)", FAILURE)
    if not os.path.lexists(vault.mountpoint):
        os.makedirs(vault.mountpoint, mode=0o700, exist_ok=True)
    check_mountpoint_is_safe(vault.mountpoint)
    if os.listdir(vault.mountpoint):
        raise NsshellError(
            f"mountpoint {vault.mountpoint} is not empty; files there are not encrypted: move them out "
            "(into the vault once it is open) and try again",
            CONFLICT,
        )
    seal_mountpoint(vault.mountpoint)
    if kernel.in_child_user_namespace():
        current = os.environ.get("NSSHELL_VAULT")
        where = f"vault {current!r}" if current else "a user namespace"
        raise NsshellError(f"cannot unlock vault {vault.name!r} from inside {where}; run it from outside", CONFLICT)
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        raise NsshellError("/dev/fuse is not accessible; run 'nsshell doctor' for how to fix it", UNSUPPORTED)


# The bare mountpoint (what is at the path outside the vault's namespace) is
# r-x for its owner only: nobody can write there, from outside or from a
# capability-less session that finds it (an outside tmux window opened from
# a vault shell lands in it), while listing it still works for the emptiness
# checks.  Mounting over it inside the namespace is unaffected.
BARE_MOUNTPOINT_MODE = 0o500


def check_mountpoint_is_safe(mountpoint):
    """Refuse a mountpoint that another user could fill or swap: it must be a
    real directory (not a symlink) that we own and nobody else can write."""
    import stat

    try:
        info = os.lstat(mountpoint)
    except OSError as exc:
        raise NsshellError(f"mountpoint {mountpoint} cannot be used ({exc.strerror})", CONFLICT) from None
    if stat.S_ISLNK(info.st_mode):
        raise NsshellError(f"mountpoint {mountpoint} is a symlink; point the registry at the real directory", UNSAFE)
    if not stat.S_ISDIR(info.st_mode):
        raise NsshellError(f"mountpoint {mountpoint} is not a directory", CONFLICT)
    if info.st_uid != os.getuid():
        raise NsshellError(
            f"mountpoint {mountpoint} belongs to uid {info.st_uid}, not to you; use a directory of your own", UNSAFE
        )
    if info.st_mode & 0o022:
        raise NsshellError(
            f"mountpoint {mountpoint} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"run 'chmod go-w {mountpoint}' and try again",
            UNSAFE,
        )


def seal_mountpoint(mountpoint):
    """Make the bare directory refuse writes (BARE_MOUNTPOINT_MODE)."""
    import stat

    if stat.S_IMODE(os.lstat(mountpoint).st_mode) != BARE_MOUNTPOINT_MODE:
        os.chmod(mountpoint, BARE_MOUNTPOINT_MODE)


def ensure_open(name, source=None, hold=False):
    """Make sure vault name is open; unlock it if needed.  Returns True if
    this call unlocked it."""
    vault = registry.get(name)
    source = source or PassphraseSource()
    if source.interactive and vault.extpass:
        source = PassphraseSource(extpass=vault.extpass)
    base = paths.runtime_dir()
    with VaultLock(name, base):
        if _open_already(name, base, hold):
            return False
        if not wait_for_holder_to_stop(name, base):
            _open_already(name, base, hold)
            return False
        clear_stale(name, base)
        preflight(vault)
        _say_why_it_locked(vault, base)
        if vault.keyring and source.interactive:
            source = PassphraseSource(keyring=True)
        attempts = PASSPHRASE_ATTEMPTS if source.interactive else 1
        for attempt in range(1, attempts + 1):
            # Also before a retry: the holder of the wrong attempt may still be
            # ending, with the cipher directory's flock.
            refuse_if_open_elsewhere(vault, base)
            # Start the holder first: it sets up the namespace and starts
            # gocryptfs while the passphrase is being typed (or read).
            holder = HolderStart(vault, hold, base)
            try:
                passphrase = source.read(name)
            except BaseException:
                holder.abandon()
                raise
            try:
                holder.finish(passphrase)
                return True
            except NsshellError as exc:
                if exc.code != BAD_PASSPHRASE or attempt == attempts:
                    raise
                sys.stderr.write("nsshell: wrong passphrase, try again\n")
    return False


def _say_why_it_locked(vault, base):
    """Once, after a lock nobody asked for (nsshell.lockreason): why the vault was locked."""
    from nsshell import lockreason

    found = lockreason.take(vault.name, base)
    if found is not None:
        when, word, detail = found
        clock = time.strftime("%H:%M", time.localtime(when))
        why = lockreason.describe(word, vault.idle_lock, detail)
        sys.stderr.write(f"nsshell: vault {vault.name!r} was locked at {clock}: {why}\n")


def refuse_if_open_elsewhere(vault, base):
    """One backend per cipher directory, whatever the runtime directory.

    Every holder keeps an flock on its vault's cipher directory while it
    lives (nsshell.holder.Supervisor); that flock is the guarantee against
    races.  This check only gives the clear message before a passphrase is
    asked for, when the vault is open from a terminal with another
    XDG_RUNTIME_DIR (or none: the /tmp fallback).  A holder that is still
    locking (ours or another runtime directory's) is waited for."""
    deadline = time.monotonic() + STOPPING_TIMEOUT
    while True:
        fd = kernel.lock_directory(vault.cipher_dir)
        if fd is not None:
            os.close(fd)
            return
        other = runtime_dir_serving(vault.cipher_dir)
        if other not in (None, base):
            sock = client.connect(vault.name, other)
            if sock is not None:  # open and serving there: say so at once
                sock.close()
                raise open_elsewhere_error(vault.name, vault.cipher_dir, base)
        if time.monotonic() > deadline:
            raise open_elsewhere_error(vault.name, vault.cipher_dir, base)
        time.sleep(0.02)


def _open_already(name, base, hold):
    try:
        reply = client.request(name, "HOLD" if hold else "STATUS", base)
    except NsshellError:
        return True  # open but failed: let the caller's JOIN report why
    return reply is not None


HOLDER_START = "from nsshell.holder import main; main(sys.argv[2:])"

# Tests only: the path of a Python file the holder runs before it starts
# (tests/faultinject), since an isolated holder reads no sitecustomize.
FAULT_INJECTION_ENV = "NSSHELL_TEST_FAULTINJECT"


def holder_command_line(name, runtime_dir, spec_fd, passphrase_fd, status_fd):
    """argv that starts a holder: ``python -I -S -c CODE nsshell.holder NAME
    RUNTIME_DIR SPEC_FD PASSPHRASE_FD STATUS_FD``.

    -I -S: no site module, no PYTHON* variables, no user site directory, no
    cwd on sys.path.  site costs the holder more than its own imports, and
    PYTHONPATH or ~/.local/.../usercustomize.py would run the code of
    whatever wrote them in the process that keeps the vault.  CODE sets
    sys.path to this process's own (_holder_sys_path), so the holder finds
    nsshell and its dependencies exactly where this client found them, in a
    venv, pipx, pip --user, system or editable install alike.  -c rather
    than -m: runpy alone costs a fifth of Python's start-up.  The word
    nsshell.holder, NAME and RUNTIME_DIR are there for people reading ps
    (and for tests that count holders); the spec itself comes on SPEC_FD."""
    fds = (str(spec_fd), str(passphrase_fd), str(status_fd))
    code = f"import sys; sys.path[:] = {_holder_sys_path()!r}; "
    fault_injection = os.environ.get(FAULT_INJECTION_ENV)
    if fault_injection:
        code += f"exec(compile(open({fault_injection!r}).read(), {fault_injection!r}, 'exec'), {{}}); "
    return [sys.executable, "-I", "-S", "-c", code + HOLDER_START, "nsshell.holder", name, runtime_dir, *fds]


def _holder_sys_path():
    """This process's sys.path without what Python put first (the script's
    directory, e.g. ~/.local/bin, or the cwd for -c and -m, which a
    downloaded repository may fill) and without the cwd, with the directory
    this nsshell came from put first if it was one of those: the holder
    runs this client's code."""
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    entries = []
    for entry in sys.path if sys.flags.safe_path else sys.path[1:]:
        if os.path.isabs(entry) and entry != cwd and entry not in entries:
            entries.append(entry)
    own = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if own not in entries:
        entries.insert(0, own)
    return entries


class HolderStart:
    """A holder being started (holder_command_line) in a new session, fed
    its spec on one socket, the passphrase on another (which it hands to
    gocryptfs unread), and answering READY or ERR on a third.

    Sockets, not pipes: any process of the user can open a pipe through
    /proc/PID/fd/N and read what crosses it; a socket there gives ENXIO
    (NAMESPACE-FACTS 20)."""

    def __init__(self, vault, hold, base):
        spec = {
            "name": vault.name,
            "cipher_dir": vault.cipher_dir,
            "mountpoint": vault.mountpoint,
            "linger": vault.linger,
            "hold": hold,
            "history": vault.history,
            "lock_on": vault.lock_on,
            "idle_lock": vault.idle_lock,
            "runtime_dir": base,
            # What nsshell.plan builds the namespace from (docs/context.md).
            **vault.context(),
            "home": paths.home(),
            "xauthority": os.environ.get("XAUTHORITY"),
            # The host's session bus sockets, covered inside unless dbus = "host".
            "host_bus_sockets": sessionbus.host_bus_sockets(os.environ),
            "xdg_runtime_dir": os.environ.get("XDG_RUNTIME_DIR"),
        }
        self.name = vault.name
        spec_w, spec_r = _socketpair()
        self.pass_w, pass_r = _socketpair()
        self.status_r, status_w = _socketpair()
        os.write(spec_w, marshal.dumps(spec))
        os.close(spec_w)
        argv = holder_command_line(vault.name, base, spec_r, pass_r, status_w)
        for fd in (spec_r, pass_r, status_w):
            os.set_inheritable(fd, True)
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            # posix_spawn: cheaper than subprocess.  The holder closes every
            # other fd it inherits from us first thing (the vault lock's fd is
            # CLOEXEC anyway: NAMESPACE-FACTS 18).
            starter = os.posix_spawn(
                sys.executable,
                argv,
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)],
                setsid=True,
            )
        finally:
            for fd in (spec_r, pass_r, status_w, null):
                os.close(fd)
        # It forks the real holder and exits at once; that holder is already
        # non-dumpable, so the passphrase we send next can be taken from its
        # socket by no other process.
        os.waitpid(starter, 0)

    def abandon(self):
        """No passphrase after all: gocryptfs reads EOF and the holder ends."""
        os.close(self.pass_w)
        os.close(self.status_r)

    def finish(self, passphrase):
        """Hand over the passphrase, wait until the holder serves or fails."""
        try:
            if passphrase is not None:
                os.write(self.pass_w, passphrase + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the holder failed already; its status line says why
        finally:
            os.close(self.pass_w)
        try:
            reply = _read_all(self.status_r, READY_TIMEOUT)
            if reply.startswith(b"ERR "):
                # The holder closes its end by exiting, after it has cleaned
                # up: return only then, so that nothing of it is left.
                _read_all(self.status_r, HOLDER_EXIT_TIMEOUT, until_eof=True)
        finally:
            os.close(self.status_r)
        text = reply.decode(errors="replace").strip()
        if text == "READY":
            return
        if text.startswith("ERR "):
            raise errors.from_line(text)
        raise NsshellError(f"the holder of vault {self.name!r} stopped without saying why; see 'nsshell doctor'", FAILURE)


def _socketpair():
    """Two connected AF_UNIX stream fds, both close-on-exec."""
    import _socket  # the C module; client imported it already

    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    return a.detach(), b.detach()


def _read_all(fd, timeout, until_eof=False):
    import select  # a C module; selectors would add collections.abc and more to every unlock

    chunks = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n") and not until_eof:
            break  # the holder says one line: READY or ERR ...
    return b"".join(chunks)


def _runtime_dir_of_open_vault(name):
    """Where vault name is open, when that is another runtime directory than
    ours (a terminal with another XDG_RUNTIME_DIR opened it): lock it there."""
    try:
        other = runtime_dir_serving(registry.get(name).cipher_dir)
        if other is not None:
            paths.check_private_dir(other)
        return other
    except (NsshellError, OSError):
        return None


def holder_status(name, base=None):
    """The holder's STATUS as a dict, or None if the vault is locked."""
    try:
        reply = client.request(name, "STATUS", base)
    except NsshellError as exc:
        return {"name": name, "state": "failed", "error": str(exc), "sessions": [], "members": []}
    if reply is None:
        return None
    import json

    return json.loads(reply[0])


def lock(name, force=False):
    """Lock an open vault; returns False if it was not open.

    Through the socket when it answers.  When it does not (deleted, replaced
    by something else, no reply), through the holder's state record: the
    keeper is asked to re-create its socket (RECREATE_SOCKET_SIGNAL) and the
    request goes again; with force, if that does not help within
    RECREATE_WAIT, LOCK_SIGNAL makes the keeper lock by itself.  A timeout is
    never taken for "not open"."""
    base = _runtime_dir_of_open_vault(name) or paths.runtime_dir()
    # reason=forced: the sessions' terminals read why they were hung up.
    line = "LOCK force reason=forced" if force else "LOCK"
    if not _send_lock(name, base, line):
        with VaultLock(name, base):  # no unlock is half-way through while we look
            if not _lock_through_state_record(name, base, line, force):
                return False
    wait_for_holder_to_stop(name, base)
    return True


RECREATE_WAIT = 3.0  # seconds a keeper gets to re-create its socket before lock --force signals it


def _send_lock(name, base, line):
    """True once the holder said OK; False if it cannot be reached or did not
    answer; raises its ERR (sessions running, for a plain LOCK)."""
    try:
        return client.request(name, line, base) is not None
    except client.HolderNotAnswering:
        return False


def _lock_through_state_record(name, base, line, force):
    """The socket did not answer: find the holder by its record (pid plus
    start time).  Returns False if no holder was running (stale files are
    cleared), True once it has been told to lock."""
    started = time.monotonic()
    held = False  # a live keeper was seen: the vault was open
    nudged = None
    lock_signalled = False
    while True:
        state = read_state(name, base) or {}
        keeper_alive = _alive(state.get("keeper"))
        if not keeper_alive and not _alive(state.get("supervisor")):
            clear_stale(name, base)
            return held  # it stopped while we looked (locked by us, or by another nsshell)
        held = held or keeper_alive
        if not lock_signalled and _send_lock(name, base, line):
            return True
        now = time.monotonic()
        if now - started >= (STOPPING_TIMEOUT if lock_signalled else NOT_ANSWERING_TIMEOUT):
            raise _holder_stuck(name, state)
        if force and not lock_signalled and now - started >= RECREATE_WAIT:
            lock_signalled = _signal_role(state, "keeper", LOCK_SIGNAL)
        elif not lock_signalled and (nudged is None or now - nudged >= 1.0):
            _signal_role(state, "keeper", RECREATE_SOCKET_SIGNAL)
            nudged = now
        time.sleep(0.05)
