"""The holder: what keeps one vault open.  Started by ``nsshell`` on demand
as ``python -m nsshell.holder``, detached from any terminal.

It is two processes, because of who may reach whom (NAMESPACE-FACTS 4, 7, 8):

- the *supervisor* stays in the initial namespaces.  It starts the backend
  (gocryptfs) there, so the FUSE daemon has no handle on the vault's
  namespace, watches it, and removes the runtime files at the end;
- the *keeper*, forked from it, unshares a user+mount namespace, goes
  non-dumpable (so no process of the same user can nsenter it or walk
  /proc/PID/root), mounts FUSE inside, hands the FUSE fd to the supervisor,
  verifies the mount, and then serves the vault's control socket.  It knows
  every session and locks the vault when the last one ends.

Control protocol (one line each way, on a unix stream socket, same uid only):
  JOIN            -> "OK <mountpoint>" + fds [user ns, mount ns] | "ERR <code> <message>"
  STATUS          -> one line of JSON
  HOLD            -> "OK": stay open with no session until LOCK
  LOCK [force] [reason=WORD]
                  -> "OK" and the vault locks | "ERR 6 ..." while sessions run;
                     a reason (nsshell.lockreason) is told to the sessions' terminals

The keeper never blocks on a client: connections are read through its poller,
and one that has not sent its line within REQUEST_DEADLINE is dropped.  Two
signals reach it when the socket cannot (they need only the same uid):
  SIGUSR1 (RECREATE_SOCKET_SIGNAL) -> re-create the socket file if it is gone or replaced
  SIGTERM (LOCK_SIGNAL)            -> lock now, ending sessions (like "LOCK force")

The passphrase is never read here: the client hands us one end of an
AF_UNIX socketpair that holds it (or soon will), and it becomes gocryptfs's
stdin.  The holder is non-dumpable before the passphrase is sent, and keeps
an flock on the vault's cipher directory for its whole life, so that one
cipher directory never gets two backends, whatever the runtime directory.
"""

import errno
import marshal
import os
import select

# Every unlock waits for this process to start, and the socket, signal and
# selectors modules cost more to import than all of nsshell (enum, mostly).
# Their C cores do everything the holder needs: _socket and _signal lack only
# enum wrappers, and Poller below is the little of selectors used here.
import _signal as signal
import _socket as socket
import sys
import time

from nsshell import errors, kernel, paths, plan, sessionbus
from nsshell.kernel import process_start_time
from nsshell.backend import BACKEND, backend_environment
from nsshell.errors import BUSY, CONFLICT, FAILURE, UNSAFE, NsshellError

FIRST_JOIN_GRACE = 30.0  # seconds a freshly unlocked vault waits for its first session
# Seconds between SIGHUP and SIGKILL when sessions are ended.  It ends as soon
# as the sessions have exited; a shell on a loaded machine can need seconds to
# write its history, and losing that is worse than a slower lock.  At most
# twice this (two rounds) plus the backend's exit: unlock.STOPPING_TIMEOUT.
END_SESSIONS_GRACE = 10.0
BACKEND_EXIT_GRACE = 5.0  # seconds the backend gets to exit by itself after the unmount
READY_TIMEOUT = 120.0  # scrypt is slow on purpose; a hung backend is not
FIRST_READ_TIMEOUT = 20.0  # a serving gocryptfs answers the keeper's first read in milliseconds
REQUEST_DEADLINE = 2.0  # seconds a client has, from connecting, to send its one request line
REQUEST_LIMIT = 256  # bytes of a request line; longer ones are answered as they stand
MAX_PENDING = 64  # connections still sending their line; beyond this the oldest is dropped
SOCKET_CHECK_INTERVAL = 1.0  # seconds between checks that the socket file is still ours
RECREATE_SOCKET_SIGNAL = signal.SIGUSR1
LOCK_SIGNAL = signal.SIGTERM
KEEPER_BUG_EXIT = 70  # the keeper locked after an unexpected error: the supervisor keeps the log


def _line(text):
    return (text.replace("\n", " ") + "\n").encode()


def _log(text):
    """A line in the vault's log (the keeper's stderr is the log file)."""
    try:
        os.write(2, f"nsshell-keeper: {text}\n".encode(errors="replace"))
    except OSError:
        pass


def _log_exception(what):
    """_log what, with the traceback of the exception being handled."""
    import traceback  # only on this rare path

    _log(f"{what}\n{traceback.format_exc().rstrip()}")


def _ignore_signal(signum, frame):
    """Installed so that a signal does not kill us; the wakeup fd carries it to the loop."""


class Poller:
    """Wait for fds (or objects with fileno()) to become readable; each
    registration carries data, handed back by select() as (fileobj, data)."""

    def __init__(self):
        self._epoll = select.epoll()
        self._registered = {}  # fd -> (fileobj, data)

    def register(self, fileobj, data=None, events=select.EPOLLIN):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        self._epoll.register(fd, events)
        self._registered[fd] = (fileobj, data)

    def unregister(self, fileobj):
        """Stop watching fileobj; a no-op if it is not (or no longer) watched."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        entry = self._registered.get(fd)
        if entry is None or (entry[0] is not fileobj and entry[0] != fileobj):
            return
        del self._registered[fd]
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: epoll forgot it by itself

    def registered(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        entry = self._registered.get(fd)
        return entry is not None and (entry[0] is fileobj or entry[0] == fileobj)

    def select(self, timeout=None):
        events = self._epoll.poll(-1 if timeout is None else timeout)
        return [self._registered[fd] for fd, _ in events if fd in self._registered]


class PendingRequest:
    """A client connection whose request line has not fully arrived yet."""

    __slots__ = ("conn", "pid", "deadline", "data")

    def __init__(self, conn, pid, deadline):
        self.conn = conn
        self.pid = pid
        self.deadline = deadline
        self.data = b""


# --- keeper -----------------------------------------------------------------------------


class Keeper:
    def __init__(self, spec, channel):
        self.spec = spec
        self.name = spec["name"]
        self.mountpoint = spec["mountpoint"]
        self.channel = channel  # socketpair end shared with the supervisor
        self.sessions = {}  # pid -> pidfd
        self.hold = bool(spec.get("hold"))
        self.linger = float(spec.get("linger", 0))
        self.failed = None  # message once the backend has died
        self.deadline = None  # when to lock if still idle
        self.listener = None
        self.socket_identity = None  # (st_dev, st_ino) of the socket file we bound
        self.next_socket_check = None
        self.pending = {}  # fd -> PendingRequest
        self.wakeup_fd = None  # read end of the signal wakeup pipe
        self.locking = False  # set once by lock_and_exit, which never returns
        self.selector = Poller()
        self.socket_path = paths.socket_path(self.name, spec["runtime_dir"])
        self.outer_user_ns = None  # the user namespace we came from: its processes are not the vault's
        self.path_watch = None  # inotify fd on the mountpoint and its parents
        self.vault_mount_id = None  # the FUSE mount's id, once verified
        self.mount_events = None  # /proc/self/mountinfo, polled for "the mount table changed"
        self.displacing = False  # the mount was displaced: sessions are being ended, the vault locks
        self.plan = plan.build(spec)  # the namespace's set-up steps around the mount (nsshell.plan)
        self.context = plan.Outcome()  # what each of them did, for STATUS
        self.bus = None  # the vault's private session bus (nsshell.sessionbus), if dbus = "vault"

    def catch_signals(self):
        """RECREATE_SOCKET_SIGNAL and LOCK_SIGNAL only write their number to a
        pipe; the serving loop reads it and does the work.  First of all, so
        that a signal sent while the vault opens waits for the loop instead of
        killing us half-way."""
        self.wakeup_fd, wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for signum in (RECREATE_SOCKET_SIGNAL, LOCK_SIGNAL):
            signal.signal(signum, _ignore_signal)
        signal.set_wakeup_fd(wakeup_w)

    # Steps until the vault is open, in order.  Any of them may raise.

    def enter_private_namespace(self):
        uid, gid = os.getuid(), os.getgid()
        self.outer_user_ns = kernel.namespace_id("user")
        kernel.unshare_user_and_mount()
        kernel.map_self_one_to_one(uid, gid)
        kernel.make_undumpable()  # after the maps: see NAMESPACE-FACTS 1
        kernel.make_root_recursive_slave()

    def check_mountpoint(self):
        try:
            entries = os.listdir(self.mountpoint)
        except FileNotFoundError:
            raise NsshellError(f"mountpoint {self.mountpoint} does not exist; create it or fix the registry", CONFLICT) from None
        except NotADirectoryError:
            raise NsshellError(f"mountpoint {self.mountpoint} is not a directory", CONFLICT) from None
        if entries:
            raise NsshellError(
                f"mountpoint {self.mountpoint} is not empty ({len(entries)} entries); files there are not "
                "encrypted: move them out (into the vault once it is open) and try again",
                CONFLICT,
            )

    def watch_mountpoint(self):
        """Before anything is mounted: watch the host directory and every parent
        (by inode), so that a move or delete of any of them is noticed even
        though the path then names another directory (NAMESPACE-FACTS 23)."""
        self.path_watch, _watched, skipped = kernel.watch_path_and_parents(self.mountpoint)
        for path, reason in skipped:
            _log(f"cannot watch {path} for moves ({reason}); a move of it would go unnoticed")

    def mount_and_hand_over_fuse_fd(self):
        # An empty read-only floor under the vault: if the vault is ever
        # unmounted in here, writes at the path fail with EROFS (never on disk).
        kernel.mount_readonly_floor(self.mountpoint)
        fuse_fd = kernel.open_fuse_device()
        kernel.mount_fuse(
            fuse_fd,
            self.mountpoint,
            f"nsshell:{self.name}",
            BACKEND.fuse_subtype,
            os.getuid(),
            os.getgid(),
            max_read=BACKEND.max_read,
        )
        kernel.send_with_fds(self.channel, b"FUSE\n", [fuse_fd])
        os.close(fuse_fd)

    def wait_for_backend(self):
        reply, _ = kernel.recv_line_with_fds(self.channel, max_fds=0)
        if reply.strip() != b"SERVING":
            # The backend failed; the supervisor tells the client why.  Take the
            # dead mount down so nothing can ever write beneath it.
            kernel.unmount(self.mountpoint, detach=True)
            os._exit(0)

    def verify_mount(self):
        """Never let a session start on a bare directory (NAMESPACE-FACTS 5).

        From here on the vault is this exact mount (its mount id): no other
        mount at the path will do, not even one of the same filesystem."""
        self.vault_mount_id = kernel.mount_id_at(self.mountpoint)
        problem = self.mount_problem()
        if problem:
            raise NsshellError(f"the vault did not mount at {self.mountpoint} ({problem}); nothing was started", FAILURE)
        os.listdir(self.mountpoint)  # a first read also lets the backend settle (NAMESPACE-FACTS 6)
        if os.stat(self.mountpoint).st_dev == os.stat(os.path.dirname(self.mountpoint) or "/").st_dev:
            raise NsshellError(f"{self.mountpoint} is not a separate filesystem; nothing was started", FAILURE)

    def mount_problem(self):
        """None while the path is exactly our vault mount, else what is wrong.

        A process that joined with its own client (not `nsshell run`) holds
        full capabilities in the namespace until it execs, so it can unmount
        or cover the vault there (NAMESPACE-FACTS 24), and a move on the host
        takes the mount away from the path (NAMESPACE-FACTS 23).  Checked at
        every JOIN and whenever the mount table changes: the path must lead
        to the very mount verified at unlock (by mount id, which a bind of the
        vault's own subdirectory does not share), at its root, with nothing
        mounted inside it."""
        try:
            at_path = kernel.mount_id_at(self.mountpoint)
            table = kernel.mount_table()
        except OSError as exc:
            return f"the mountpoint cannot be reached ({exc.strerror or exc})"
        ours = [m for m in table if m["id"] == self.vault_mount_id]
        if not ours:
            return "the vault was unmounted"
        if ours[0]["target"] != self.mountpoint:
            return f"the vault's mount moved to {ours[0]['target']}"
        if ours[0]["fstype"] != f"fuse.{BACKEND.fuse_subtype}" or ours[0]["root"] != "/":
            return "the mount at the mountpoint is not the vault's root"
        if at_path != self.vault_mount_id:
            return "something else is mounted over the vault or its path"
        inside = [m["target"] for m in table if m["parent"] == self.vault_mount_id]
        if inside:
            return f"something is mounted inside the vault at {inside[0]}"
        return None

    def listen(self):
        """Bind the control socket (whatever is at its path goes first)."""
        old_umask = os.umask(0o077)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
            kernel.with_unix_path(listener.bind, self.socket_path)
            os.chmod(self.socket_path, 0o600)
            info = os.lstat(self.socket_path)
            listener.listen(64)
        except BaseException:
            listener.close()
            raise
        finally:
            os.umask(old_umask)
        self.listener = listener
        self.socket_identity = (info.st_dev, info.st_ino)

    # Serving.

    def serve(self):
        """The loop, until lock_and_exit.  Nothing in it blocks on a client,
        and nothing that goes wrong in it is passed over: it is logged, and
        the vault locks."""
        try:
            self.my_mount_ns = kernel.namespace_id("mnt")
            self.my_user_ns = kernel.namespace_id("user")
            self.user_ns_fd = os.open("/proc/self/ns/user", os.O_RDONLY | os.O_CLOEXEC)
            self.mount_ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            self.my_user_ns_ino = os.fstat(self.user_ns_fd).st_ino
            # An offline vault's sessions join its network namespace too (nsshell.plan).
            self.join_fds = [self.user_ns_fd, self.mount_ns_fd]
            if self.spec.get("offline"):
                self.join_fds.append(os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC))
            self.selector.register(self.wakeup_fd, self.on_signal)
            self.selector.register(self.listener, self.accept)
            self.selector.register(self.channel, self.from_supervisor)
            if self.bus is not None:
                self.selector.register(self.bus.listener, self.bus_wanted)
            self.watch_the_mount()
            self.next_socket_check = time.monotonic() + SOCKET_CHECK_INTERVAL
            if not self.hold:
                self.deadline = time.monotonic() + max(FIRST_JOIN_GRACE, self.linger)
            while True:
                self.run_once(self.next_timeout())
                now = time.monotonic()
                if self.deadline is not None and now >= self.deadline:
                    self.deadline = None
                    self.guarded(self.idle_check, True)
                if now >= self.next_socket_check:
                    self.guarded(self.check_socket)
        except BaseException:
            _log_exception("unexpected error in the serving loop; locking the vault")
            self.lock_and_exit(code=KEEPER_BUG_EXIT)

    def next_timeout(self):
        wake = [self.next_socket_check]
        if self.deadline is not None:
            wake.append(self.deadline)
        wake.extend(pending.deadline for pending in self.pending.values())
        return max(0.0, min(wake) - time.monotonic())

    def run_once(self, timeout):
        """Wait up to timeout, handle what is ready, drop overdue requests."""
        for fileobj, handler in self.selector.select(timeout):
            if self.selector.registered(fileobj):  # an earlier handler may have dropped it
                self.guarded(handler, fileobj)
        self.drop_overdue_requests()

    def guarded(self, step, *args):
        """Run one step of the loop; an exception nobody expected is logged
        and locks the vault (a keeper in a state nobody understands must not
        go on holding the key)."""
        try:
            step(*args)
        except Exception:
            _log_exception(f"unexpected error in {getattr(step, '__name__', step)}; locking the vault")
            self.lock_and_exit(code=KEEPER_BUG_EXIT)

    def on_signal(self, wakeup_fd):
        try:
            received = os.read(wakeup_fd, 64)
        except BlockingIOError:
            return
        if LOCK_SIGNAL in received:
            _log(f"signal {LOCK_SIGNAL}: locking the vault, ending its sessions")
            self.lock_and_exit()
        if RECREATE_SOCKET_SIGNAL in received:
            self.check_socket()

    def check_socket(self):
        """Re-create the socket file if it was deleted or replaced (a FIFO, a
        plain file, another socket): without it nobody could join or lock."""
        self.next_socket_check = time.monotonic() + SOCKET_CHECK_INTERVAL
        if self.locking:
            return
        try:
            info = os.lstat(self.socket_path)
            if self.listener is not None and (info.st_dev, info.st_ino) == self.socket_identity:
                return
        except OSError:
            pass  # gone (or its directory is): make it again below
        _log(f"the control socket {self.socket_path} was deleted or replaced; re-creating it")
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
        try:
            self.listen()
        except OSError as exc:
            _log(f"cannot re-create the control socket ({exc}); trying again in {SOCKET_CHECK_INTERVAL:g} s")
            return
        self.selector.register(self.listener, self.accept)

    # Watching the mount: a displaced vault ends its sessions and locks.

    def watch_the_mount(self):
        """Register the path watch (set up before the mount) and the mount
        table: /proc/self/mountinfo signals POLLPRI whenever a mount appears,
        disappears or moves in this namespace."""
        if self.path_watch is not None:
            self.selector.register(self.path_watch, self.mountpoint_moved)
        self.mount_events = open("/proc/self/mountinfo", "rb", buffering=0)
        self.selector.register(self.mount_events, self.mount_table_changed, events=select.EPOLLPRI)

    def mountpoint_moved(self, fd):
        try:
            masks = kernel.read_watch_events(fd)
        except Exception as exc:  # never silently: fail safe
            self.displaced(f"its mountpoint watch failed ({exc!r})")
            return
        if masks:
            self.displaced(f"{self.mountpoint} or one of its parent directories was moved or deleted on the host")

    def mount_table_changed(self, _file):
        try:
            problem = self.mount_problem()
        except Exception as exc:  # never silently: fail safe
            problem = f"its mount could not be checked ({exc!r})"
        if problem:
            self.displaced(problem)
            return
        # A shadowed or hidden file replaced on the host loses its cover (nsshell.plan).
        try:
            for dest in plan.restore_shadows(self.context):
                _log(f"{dest} was replaced on the host; it is covered again inside the vault")
        except Exception as exc:  # never silently: fail safe
            self.displaced(f"a shadowed path could not be covered again ({exc!r})")

    def displaced(self, problem):
        """The path no longer leads to the vault, so a session's next write
        could land on whatever is there now, maybe in plaintext on the host
        disk.  Kill the sessions at once (SIGKILL: a shell that saves its
        history on SIGHUP would write it there), then lock."""
        if self.displacing:
            return  # already ending the sessions and locking
        self.displacing = True
        self.failed = (
            f"vault {self.name!r} was locked because {problem}; its sessions were ended; "
            f"check {self.mountpoint} and open it again"
        )
        _log(self.failed)
        for fileobj in (self.path_watch, self.mount_events):
            if fileobj is not None:
                try:
                    self.selector.unregister(fileobj)
                except (KeyError, OSError):
                    pass
        self.path_watch = self.mount_events = None
        self.stop_listening()
        for _ in range(3):
            for pidfd in list(self.sessions.values()):
                _signal_pidfd(pidfd, signal.SIGKILL)
            try:
                self.refresh_sessions()
            except Exception as exc:  # pragma: no cover - /proc unreadable
                _log(f"cannot list the vault's processes ({exc!r})")
        # The log goes with the runtime files at lock: the next unlock tells why.
        from nsshell import lockreason

        try:
            detail = lockreason.without_names_inside(problem, self.mountpoint)
            lockreason.record(self.name, self.spec["runtime_dir"], lockreason.DISPLACED, detail)
        except OSError as exc:
            _log(f"cannot record why {self.name!r} locked: {exc}")
        self.lock_and_exit()

    # The private session bus (nsshell.sessionbus).

    def open_bus(self):
        """Before READY: the bus socket exists inside from the start, so the
        first program that connects finds it; the daemon starts then."""
        if self.spec.get("dbus", "host") == "vault":
            self.bus = sessionbus.SessionBus(self.spec, os.environ)
            self.bus.listen()

    def bus_wanted(self, listener):
        """Something connected to the bus socket: start the daemon on it (it
        accepts that connection and the next ones itself)."""
        self.selector.unregister(listener)
        if self.locking:
            return  # too late: the bus's tmpfs goes with the namespace
        try:
            pid = self.bus.start()
        except OSError as exc:
            # Sessions keep their private address, which nothing answers now,
            # and the host's bus stays hidden: GUI programs fail, nothing leaks.
            _log(f"the vault's session bus did not start ({exc.strerror or exc}); clients of it are refused")
            self.refuse_bus_clients()
            return
        _log(f"session bus started (pid {pid}) for the first client")
        self.selector.register(self.bus.pidfd, self.bus_ended)
        self.hand_bus_to_relay()

    def hand_bus_to_relay(self):
        """The supervisor relays notifications to the host's bus
        (nsshell.notifyrelay); it is outside, so it gets a connection."""
        if self.channel is None:
            return  # the supervisor is gone: no relay (the log said so)
        try:
            conn = self.bus.connect()
        except OSError as exc:
            _log(f"cannot connect to the vault's bus for the notification relay ({exc})")
            return
        try:
            kernel.send_with_fds(self.channel, b"BUS\n", [conn.fileno()])
        except OSError as exc:
            _log(f"cannot hand the vault's bus to the notification relay ({exc})")
        finally:
            conn.close()

    def refuse_bus_clients(self):
        """Close what waits on a bus socket no daemon will serve."""
        listener = self.bus.listener
        listener.setblocking(False)
        try:
            while True:
                fd, _ = listener._accept()
                os.close(fd)
        except OSError:
            pass
        finally:
            listener.setblocking(True)
        self.selector.register(listener, self.bus_wanted)

    def bus_ended(self, pidfd):
        """The daemon exited.  Stopped by us, or died (killed, crashed): its
        clients lost their connections; it starts again for the next one, at
        the same address.  Sessions never fall back to the host's bus."""
        self.selector.unregister(pidfd)
        how = self.bus.exited()
        if not self.bus_stopping and not self.locking:
            _log(f"the vault's session bus exited ({how}) while sessions use the vault; it starts again at the next connection")
        if not self.locking:
            self.selector.register(self.bus.listener, self.bus_wanted)

    bus_stopping = False

    def stop_bus(self):
        """End the daemon and the services it started (they must not outlive
        the last session of a vault that stays open: see nsshell.sessionbus)."""
        if self.bus is None or (not self.bus.running and not self.bus.service_pids()):
            return
        self.bus_stopping = True
        try:
            if self.bus.pidfd is not None:
                self.selector.unregister(self.bus.pidfd)  # before stop() closes it
            self.bus.stop()
            if not self.locking and not self.selector.registered(self.bus.listener):
                self.selector.register(self.bus.listener, self.bus_wanted)
        finally:
            self.bus_stopping = False
        _log("no session left: the session bus and its services were stopped")

    def from_supervisor(self, channel):
        try:
            message = channel.recv(256)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message.startswith(b"BACKEND-EXITED"):
            code = message.split()[1].decode() if len(message.split()) > 1 else "?"
            self.failed = (
                f"vault {self.name!r} failed: its gocryptfs process exited (code {code}); "
                f"leave its sessions or run 'nsshell lock {self.name} --force', then open it again"
            )
            _log(f"gocryptfs exited (code {code})")
            self.idle_check()
        elif not message:
            # The supervisor is gone (killed).  The backend may still serve;
            # clean up the runtime files ourselves at the end.
            self.selector.unregister(channel)
            self.channel = None
            if self.watched_by_autolock():
                # Its threads were the auto-lock watchers (nsshell.autolock): a
                # vault that asked to lock by itself must not stay open unwatched
                # because a process of the user killed them.  Fail safe.
                _log("the supervisor is gone, and with it the auto-lock watchers (lock_on, idle_lock); locking")
                self.refresh_sessions()
                self.tell_why("supervisor-lost")
                self.lock_and_exit()

    def watched_by_autolock(self):
        """Whether this vault asked to lock by itself (any lock_on trigger, or idle_lock)."""
        return bool(self.spec.get("lock_on", ())) or bool(self.spec.get("idle_lock", 0))

    def accept(self, listener):
        """Take every waiting connection, without blocking: each then has
        REQUEST_DEADLINE to send its line through the poller, so a slow or
        silent client delays nobody else."""
        for _ in range(MAX_PENDING):
            try:
                fd, _address = listener._accept()  # _socket's accept
            except BlockingIOError:
                return
            except (ConnectionAbortedError, InterruptedError):
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM) and self.pending:
                    _log(f"cannot accept a connection ({exc.strerror}); dropping the oldest waiting one")
                    self.drop_request(min(self.pending.values(), key=lambda p: p.deadline))
                    return
                raise
            conn = socket.socket(fileno=fd)
            try:
                pid, uid, _gid = kernel.peer_credentials(conn)
            except OSError:
                conn.close()
                continue
            if uid != os.getuid():
                conn.close()  # another user: say nothing at all
                continue
            conn.setblocking(False)
            pending = PendingRequest(conn, pid, time.monotonic() + REQUEST_DEADLINE)
            self.pending[conn.fileno()] = pending
            self.selector.register(conn, self.readable)
            if len(self.pending) > MAX_PENDING:
                self.drop_request(min(self.pending.values(), key=lambda p: p.deadline))

    def readable(self, conn):
        pending = self.pending.get(conn.fileno())
        if pending is None:
            self.selector.unregister(conn)
            return
        try:
            chunk = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            self.drop_request(pending)  # the client went away
            return
        pending.data += chunk
        if chunk and b"\n" not in pending.data and len(pending.data) <= REQUEST_LIMIT:
            return  # more to come, until its deadline
        # A line, end of file or too much: answer what we have, like a line.
        self.forget_request(pending)
        request = pending.data.split(b"\n", 1)[0]
        try:
            self.handle(conn, pending.pid, request.decode(errors="replace").split())
        except (BlockingIOError, BrokenPipeError, ConnectionError):
            pass  # the client left, or does not read its reply: its loss alone
        finally:
            conn.close()

    def forget_request(self, pending):
        self.selector.unregister(pending.conn)
        self.pending.pop(pending.conn.fileno(), None)

    def drop_request(self, pending):
        self.forget_request(pending)
        pending.conn.close()

    def drop_overdue_requests(self):
        now = time.monotonic()
        for pending in [p for p in self.pending.values() if p.deadline <= now]:
            self.drop_request(pending)

    def handle(self, conn, pid, words):
        verb = words[0] if words else ""
        if verb == "JOIN":
            problem = None if self.failed else self.mount_problem()
            if problem:
                # Refuse, then lock: no session may start on what is at the path now.
                conn.sendall(
                    _line(f"ERR {FAILURE} vault {self.name!r} is no longer mounted at {self.mountpoint} ({problem}); "
                          "nothing was started; it locks now: open it again")
                )
                self.displaced(problem)
                return
            if self.failed:
                conn.sendall(_line(f"ERR {FAILURE} {self.failed}"))
                return
            self.add_session(pid)
            history = self.spec.get("history", "vault")
            bus = self.spec.get("dbus", "host")
            kernel.send_with_fds(conn, _line(f"OK {history} bus={bus} {self.mountpoint}"), self.join_fds)
        elif verb == "STATUS":
            import json  # only here: json pulls in re, which the start-up does not need

            conn.sendall((json.dumps(self.status()) + "\n").encode())
        elif verb == "HOLD":
            self.hold = True
            self.deadline = None
            conn.sendall(b"OK\n")
        elif verb == "LOCK":
            force = "force" in words[1:]
            reason = _lock_reason(words[1:])
            self.refresh_sessions()
            if self.sessions and not force:
                count = len(self.sessions)
                conn.sendall(
                    _line(
                        f"ERR {BUSY} vault {self.name!r} has {count} session{'s' if count != 1 else ''} "
                        f"(see 'nsshell ps {self.name}'); leave them, or use 'nsshell lock {self.name} --force' "
                        "to end them"
                    )
                )
                return
            # Take the socket path away before saying OK: a caller that then
            # waits for the holder to stop must not reach this socket again and
            # mistake a locking holder for a serving one.
            self.stop_listening()
            conn.sendall(b"OK\n")
            if reason:
                self.tell_why(reason)
            self.lock_and_exit()
        else:
            conn.sendall(_line(f"ERR {FAILURE} unknown request"))

    def tell_why(self, reason):
        """Say why on the sessions' terminals; for an auto-lock
        (nsshell.autolock) also leave the reason for the next 'nsshell
        enter' (nsshell.lockreason)."""
        from nsshell import lockreason

        why = lockreason.describe(reason, self.spec.get("idle_lock", 0))
        if reason in lockreason.RECORDED:
            try:
                lockreason.record(self.name, self.spec["runtime_dir"], reason)
            except OSError as exc:
                _log(f"cannot record why {self.name!r} locked: {exc}")
        lockreason.tell_terminals(list(self.sessions), f"nsshell: vault {self.name!r} locked: {why}")

    def status(self):
        # sessions: what joined (and what was adopted once those ended);
        # members: every process that can see the vault right now.
        return {
            "name": self.name,
            "state": "failed" if self.failed else "open",
            "error": self.failed,
            "sessions": sorted(self.sessions),
            "members": self.namespace_members(),
            "services": self.bus.service_pids() if self.bus is not None else [],
            "hold": self.hold,
            "linger": self.linger,
            "mountpoint": self.mountpoint,
            "cipher_dir": self.spec["cipher_dir"],
            "mount_namespace": self.my_mount_ns,
            "keeper_pid": os.getpid(),
            # The keeper is non-dumpable, so nothing outside can count its fds;
            # soak tests compare this before and after thousands of requests.
            "open_fds": _open_fd_count(),
            "context": self.context.rows,
            "dbus": self.spec.get("dbus", "host"),
        }

    # Sessions.

    def add_session(self, pid):
        if pid in self.sessions:
            return
        try:
            pidfd = kernel.pidfd_open(pid)
        except ProcessLookupError:
            return
        self.sessions[pid] = pidfd
        self.selector.register(pidfd, lambda fd, pid=pid: self.session_ended(pid))
        self.deadline = None

    def session_ended(self, pid):
        pidfd = self.sessions.pop(pid, None)
        if pidfd is not None:
            self.selector.unregister(pidfd)
            os.close(pidfd)
        if not self.sessions:
            self.idle_check()

    def namespace_members(self):
        """Every process that can see the vault, except us: those in this mount
        namespace (sessions and what they started), and those that a session
        moved into a namespace nested in ours (``unshare -U -m`` inside still
        sees the plaintext).  Identity by namespace inode, never by name.

        The private bus and what it starts are not members but services
        (their own mount namespace: nsshell.sessionbus): they do not keep the
        vault open, and lock_and_exit ends them too."""
        members = []
        me = os.getpid()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                mount_ns = os.readlink(f"/proc/{entry}/ns/mnt")
                if mount_ns == self.my_mount_ns:
                    members.append(int(entry))
                    continue
                if self.bus is not None and self.bus.is_service(mount_ns):
                    continue
                user_ns = os.readlink(f"/proc/{entry}/ns/user")
                if user_ns == self.my_user_ns or (
                    user_ns != self.outer_user_ns and kernel.user_namespace_descends_from(entry, self.my_user_ns_ino)
                ):
                    members.append(int(entry))
            except OSError:
                continue
        return members

    def refresh_sessions(self):
        """Adopt processes left in the namespace by sessions that ended
        (a background job, a forked editor): the vault stays open for them."""
        for pid in self.namespace_members():
            self.add_session(pid)

    def idle_check(self, waited=False):
        """Lock if nothing uses the vault any more, after the linger time.

        waited: the first-join grace or the linger time has just run out."""
        if self.locking or self.sessions:
            return
        self.refresh_sessions()
        if self.sessions:
            return
        if self.failed:
            self.lock_and_exit()
        if self.hold:
            self.stop_bus()
            return
        if not waited and self.linger > 0:
            self.stop_bus()
            self.deadline = time.monotonic() + self.linger
            return
        self.lock_and_exit()

    def end_sessions(self):
        """SIGHUP (shells save history and exit), then SIGKILL what is left.

        The loop goes on meanwhile (sessions' pidfds, signals, the
        supervisor); whatever its handlers ask for, lock_and_exit is running
        already and returns at once."""
        for _ in range(2):
            self.refresh_sessions()
            for pid in list(self.sessions):
                _signal_pidfd(self.sessions[pid], signal.SIGHUP)
            if self.bus is not None:
                self.bus.signal_services(signal.SIGTERM)  # the bus and its services
            deadline = time.monotonic() + END_SESSIONS_GRACE
            while (self.sessions or self.services_left()) and time.monotonic() < deadline:
                self.run_once(0.05)
            for pid in list(self.sessions):
                _signal_pidfd(self.sessions[pid], signal.SIGKILL)
            if self.bus is not None:
                self.bus.signal_services(signal.SIGKILL)
            time.sleep(0.05)

    def services_left(self):
        if self.bus is None:
            return False
        return bool(self.bus.service_pids())  # the daemon too, until bus_ended reaps it

    def unmount(self):
        for attempt in range(20):
            try:
                kernel.unmount(self.mountpoint)
                return
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOENT):
                    return  # already gone
                if exc.errno != errno.EBUSY or attempt == 19:
                    _log(f"unmounting {self.mountpoint} failed ({exc.strerror}); detaching it")
                    kernel.unmount(self.mountpoint, detach=True)
                    return
                time.sleep(0.05)

    def lock_and_exit(self, code=0):
        """End the sessions, unmount, exit: the vault is locked.

        Safe to call from anywhere and any number of times: the first call
        never returns (it ends in os._exit, whatever fails on the way), and
        every call made while it runs (a session that ends, a signal, a
        handler of the loop it keeps running) returns at once."""
        if self.locking:
            return
        self.locking = True
        try:
            self.stop_listening()
            for pending in list(self.pending.values()):
                self.drop_request(pending)  # they see EOF: "locking right now"
            self.end_sessions()
            self.unmount()
            if self.bus is not None:
                # Its tmpfs off the host's directory, so that whoever cleans up
                # (the supervisor, or we when it is gone) can remove it.
                kernel.unmount(self.bus.directory, detach=True)
            try:
                # The same for the host's dconf directory seen there (plan's "host view").
                kernel.unmount(paths.dconf_host_view(self.name, self.spec["runtime_dir"]), detach=True)
            except OSError:
                pass  # no view: the host had none to show, or the plan made none
        except BaseException:
            _log_exception("unexpected error while locking; detaching the mount")
            code = KEEPER_BUG_EXIT
            try:
                kernel.unmount(self.mountpoint, detach=True)
            except BaseException:
                _log_exception("detaching the mount failed too")
        finally:
            try:
                if self.channel is None:
                    cleanup_runtime_files(self.spec["name"], self.spec["runtime_dir"], keep_log=code != 0)
            finally:
                os._exit(code)

    def stop_listening(self):
        """Refuse new sessions from now on: the socket path goes first."""
        if self.listener is not None:
            if self.socket_is_ours():
                try:
                    os.unlink(self.socket_path)
                except FileNotFoundError:
                    pass
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def socket_is_ours(self):
        try:
            info = os.lstat(self.socket_path)
        except OSError:
            return False
        return (info.st_dev, info.st_ino) == self.socket_identity


def _lock_reason(words):
    """The WORD of 'LOCK force reason=WORD' if nsshell.lockreason knows it."""
    for word in words:
        if word.startswith("reason="):
            from nsshell.lockreason import REASONS

            return word[7:] if word[7:] in REASONS else None
    return None


def _open_fd_count():
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus listdir's own fd
    except OSError:
        return None


def _signal_pidfd(pidfd, signum):
    try:
        signal.pidfd_send_signal(pidfd, signum)
    except OSError:
        pass


def run_keeper(spec, channel):
    keeper = Keeper(spec, channel)
    try:
        keeper.catch_signals()
        kernel.set_process_name("nsshell-keeper")
        keeper.enter_private_namespace()
        plan.carry_out(keeper.plan, keeper.context, "before mount")
        keeper.check_mountpoint()
        keeper.watch_mountpoint()
        keeper.mount_and_hand_over_fuse_fd()
        keeper.wait_for_backend()
        keeper.verify_mount()
        plan.carry_out(keeper.plan, keeper.context, "after mount")
        keeper.open_bus()
        keeper.listen()
    except (NsshellError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, kernel.KernelError):
            exc = NsshellError(f"cannot open the vault: {exc}", FAILURE)
        try:
            channel.sendall(errors.to_line(exc))
        except OSError:
            pass
        os._exit(1)
    channel.sendall(b"READY\n")
    keeper.serve()


# --- supervisor -------------------------------------------------------------------------


def cleanup_runtime_files(name, runtime_dir, keep_log=False):
    """Remove the state record and the log (kept when the keeper logged a bug)."""
    removed = [paths.state_path(name, runtime_dir)]
    if not keep_log:
        removed.append(paths.log_path(name, runtime_dir))
    for path in removed:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    try:
        os.rmdir(paths.dconf_host_view(name, runtime_dir))  # empty on the host (nsshell.plan's "host view")
    except OSError:
        pass
    try:
        os.rmdir(paths.bus_dir(name, runtime_dir))  # empty on the host: the bus lived on a tmpfs over it
    except OSError:
        pass


def write_state(name, runtime_dir, **fields):
    """NAME.state: JSON {role: [pid, start time] or null}.  Written by hand
    (ints and null only) to keep the json module off the unlock path."""
    path = paths.state_path(name, runtime_dir)
    tmp = f"{path}.tmp"
    body = ", ".join(
        f'"{role}": ' + ("null" if record is None else f"[{int(record[0])}, {int(record[1] or 0)}]")
        for role, record in fields.items()
    )
    try:
        fd = paths.create_private_file(tmp)
        with os.fdopen(fd, "w") as f:
            f.write("{" + body + "}")
        os.replace(tmp, path)  # rename replaces a planted symlink at path, never its target
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise paths.runtime_file_error(path, exc) from None


def runtime_dir_serving(cipher_dir):
    """The runtime directory of the holder that keeps cipher_dir locked
    (Supervisor.run), or None.

    Holders carry NAME and RUNTIME_DIR in their argv (holder_command_line)."""
    try:
        pid = kernel.flock_owner(cipher_dir)
        if pid is None or pid <= 0:
            return None
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        if b"nsshell.holder" not in argv:
            return None
        where = argv[argv.index(b"nsshell.holder") + 2]
        return os.fsdecode(where)
    except (OSError, IndexError, ValueError):
        return None


def open_elsewhere_error(name, cipher_dir, base):
    other = runtime_dir_serving(cipher_dir)
    if other is None:
        return NsshellError(
            f"vault {name!r} is already served by another nsshell holder (its cipher directory {cipher_dir} is "
            "locked); use it, or lock it, from the terminal that opened it",
            BUSY,
        )
    if other == base:
        return NsshellError(f"vault {name!r} is still being locked or opened by another nsshell", BUSY)
    return NsshellError(
        f"vault {name!r} is already open from another runtime directory, {other} (this terminal uses {base}: "
        f"XDG_RUNTIME_DIR differs); use it from there, or run 'nsshell lock {name}' and open it again here",
        BUSY,
    )


class Supervisor:
    def __init__(self, spec, passphrase_fd, status_fd):
        self.spec = spec
        self.name = spec["name"]
        self.runtime_dir = spec["runtime_dir"]
        self.passphrase_fd = passphrase_fd
        self.status = os.fdopen(status_fd, "wb", buffering=0)
        self.backend = None
        self.keeper_pid = None
        self.notified = False
        self.fuse_signals = False  # SIGIO on every FUSE request (count_fuse_requests)
        self.placeholders = []  # what make_placeholders made on the host (nsshell.plan)

    def report(self, line):
        """READY: the client returns at once, so close the status pipe now."""
        if self.status is not None:
            try:
                self.status.write(line)
                self.status.close()
            except OSError:
                pass
            self.status = None

    def report_failure(self, line):
        """An ERR line, written only after the keeper and the backend are gone
        and the runtime files removed; the pipe is left for this process's exit
        to close, and the client waits for that EOF.  Else a retry at once
        could meet a holder still cleaning up, which removes the retry's files."""
        if self.status is not None:
            try:
                self.status.write(line)
            except OSError:
                pass

    def run(self):
        kernel.set_process_name("nsshell-holder")
        # One backend per cipher directory, whatever the runtime directory:
        # this flock lasts as long as this process and the keeper forked below
        # (CLOEXEC: gocryptfs does not get it).  Taken before the backend starts.
        self.cipher_lock = kernel.lock_directory(self.spec["cipher_dir"])
        if self.cipher_lock is None:
            cleanup_runtime_files(self.name, self.runtime_dir)
            self.report_failure(errors.to_line(open_elsewhere_error(self.name, self.spec["cipher_dir"], self.runtime_dir)))
            return
        me = os.getpid()
        write_state(self.name, self.runtime_dir, supervisor=[me, process_start_time(me)], keeper=None, backend=None)
        # Paths to shadow that the host lacks get an empty placeholder to bind
        # over, made here, outside, before the keeper (so before any session).
        self.placeholders = plan.make_placeholders(plan.build(self.spec), self.name, self.spec["home"])
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.keeper_pid = os.fork()
        if self.keeper_pid == 0:
            ours.close()
            os.close(self.passphrase_fd)
            if self.status is not None:
                self.status.close()
            # Dumpable only now that the passphrase socket is closed: the keeper
            # must write its own uid_map before it goes non-dumpable itself.
            kernel.make_dumpable_again()
            run_keeper(self.spec, theirs)
            os._exit(0)
        theirs.close()
        keeper_fd = kernel.pidfd_open(self.keeper_pid)
        try:
            self.start_backend(ours)
        except NsshellError as exc:
            # Say why only once the keeper, the backend and the runtime files
            # are gone: the caller may look at once for anything left behind
            # (a keeper with more mounts to tear down takes longer to exit).
            self.finish(keeper_fd, failure=errors.to_line(exc))
            return
        self.start_autolock()
        self.watch(ours, keeper_fd)

    def count_fuse_requests(self, fuse_fd):
        """For idle_lock: the kernel signals this process (SIGIO) on every
        FUSE request of the vault; start_autolock hands the signals to the
        idle watcher.  Without it the watcher falls back to /proc (see
        nsshell.autolock.ActivityProbe) and the log says why."""
        try:
            signal.signal(signal.SIGIO, _ignore_signal)  # its default action would kill us
            kernel.signal_on_fuse_requests(fuse_fd, os.getpid())
            self.fuse_signals = True
        except OSError as exc:
            sys.stderr.write(f"nsshell-holder: cannot count FUSE requests ({exc!r}); idle_lock measures /proc instead\n")

    def start_autolock(self):
        """Lock on suspend, screen lock, logout and idleness (nsshell.autolock):
        threads of this process, started only after READY so that unlocking
        is no slower, and ended with it."""
        try:
            from nsshell import autolock

            requests = None
            if self.fuse_signals:
                # Every signal's number is written to this pipe by the C-level
                # handler, in whichever thread it lands; the idle watcher reads
                # it.  A full pipe drops bytes quietly: "any" is all it needs.
                requests, written = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
                signal.set_wakeup_fd(written, warn_on_full_buffer=False)
            autolock.start(self.spec, self.backend[0] if self.backend else None, requests)
        except Exception as exc:  # the vault works without auto-lock; the log says why
            sys.stderr.write(f"nsshell-holder: auto-lock not started for {self.name!r}: {exc!r}\n")

    def start_backend(self, channel):
        reply, fds = kernel.recv_line_with_fds(channel, max_fds=1)
        if not reply.startswith(b"FUSE") or len(fds) != 1:
            text = reply.decode(errors="replace").strip()
            if text.startswith("ERR "):
                raise errors.from_line(text)
            raise NsshellError("the vault's namespace could not be set up", FAILURE)
        fuse_fd = fds[0]
        # SIGUSR1 is gocryptfs saying "serving"; its default action would kill us.
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "notified", True))
        signal.set_wakeup_fd(wake_w)
        if self.spec.get("idle_lock"):
            self.count_fuse_requests(fuse_fd)
        argv = BACKEND.serve_argv(self.spec["cipher_dir"], fuse_fd, os.getpid())
        argv.insert(1, "-nosyslog")
        environment = backend_environment()
        pid = os.fork()
        if pid == 0:
            try:
                # stdin: the passphrase socket (never a pipe: NAMESPACE-FACTS 20);
                # stdout and stderr: the vault's log; and the FUSE fd.  Nothing else.
                os.dup2(self.passphrase_fd, 0)
                os.set_inheritable(fuse_fd, True)
                _close_fds_except(0, 1, 2, fuse_fd)
                signal.signal(signal.SIGUSR1, signal.SIG_DFL)
                os.execve(argv[0], argv, environment)
            finally:
                os._exit(127)
        os.close(fuse_fd)
        os.close(self.passphrase_fd)
        self.backend = (pid, kernel.pidfd_open(pid))
        me = os.getpid()
        try:
            write_state(
                self.name,
                self.runtime_dir,
                supervisor=[me, process_start_time(me)],
                keeper=[self.keeper_pid, process_start_time(self.keeper_pid)],
                backend=[pid, process_start_time(pid)],
            )
        except NsshellError:
            channel.sendall(b"FAILED\n")  # the keeper waits for a word on the backend
            raise
        deadline = time.monotonic() + READY_TIMEOUT
        waiter = Poller()
        waiter.register(wake_r)
        waiter.register(self.backend[1])
        while not self.notified:
            exited = self.backend_exit_code()
            if exited is not None:
                channel.sendall(b"FAILED\n")
                raise BACKEND.explain_exit(exited, self.log_tail())
            if time.monotonic() > deadline:
                channel.sendall(b"FAILED\n")
                raise NsshellError("gocryptfs did not start serving within two minutes; see its log", FAILURE)
            waiter.select(1.0)
            try:
                os.read(wake_r, 64)
            except BlockingIOError:
                pass
        channel.sendall(b"SERVING\n")
        # The keeper now reads the mount.  If the backend said "serving" but
        # never answers, that read would block the keeper (and this vault)
        # for good: kill the backend, which aborts the FUSE connection, so the
        # keeper's read fails and it gives up like on any other failure.
        channel.settimeout(FIRST_READ_TIMEOUT)
        try:
            reply, _ = kernel.recv_line_with_fds(channel, max_fds=0)
        except TimeoutError:
            _signal_pidfd(self.backend[1], signal.SIGKILL)
            raise NsshellError(
                f"gocryptfs said it was serving but did not answer within {FIRST_READ_TIMEOUT:.0f} s; "
                "nothing was started; try again (see 'nsshell doctor')",
                FAILURE,
            ) from None
        finally:
            channel.settimeout(None)
        text = reply.decode(errors="replace").strip()
        if text != "READY":
            if text.startswith("ERR "):
                raise errors.from_line(text)
            raise NsshellError("the vault's holder stopped while opening it", FAILURE)
        self.report(b"READY\n")

    def backend_exit_code(self):
        if self.backend is None:
            return None
        pid, _ = self.backend
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return -1
        if done == 0:
            return None
        self.backend = None
        return os.waitstatus_to_exitcode(status)

    def log_tail(self):
        try:
            with open(paths.log_path(self.name, self.runtime_dir), "rb") as f:
                lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
            return lines[-1] if lines else ""
        except OSError:
            return ""

    def watch(self, channel, keeper_fd):
        """Until the keeper exits: pass on a backend death, then clean up."""
        waiter = Poller()
        waiter.register(keeper_fd)
        waiter.register(channel, "keeper")
        if self.backend is not None:
            waiter.register(self.backend[1], "backend")
        keeper_alive = True
        while keeper_alive:
            for fileobj, role in waiter.select():
                if role == "keeper":
                    if not self.from_keeper(channel):
                        waiter.unregister(channel)
                elif role == "backend":
                    code = self.backend_exit_code()
                    if code is not None:
                        waiter.unregister(fileobj)
                        try:
                            channel.sendall(_line(f"BACKEND-EXITED {code}"))
                        except OSError:
                            pass
                else:
                    keeper_alive = False
        self.finish(keeper_fd)

    def from_keeper(self, channel):
        """A line from the keeper after READY; False at EOF (it is ending)."""
        try:
            line, fds = kernel.recv_line_with_fds(channel, max_fds=1)
        except OSError:
            return False
        if line.strip() == b"BUS" and len(fds) == 1:
            self.start_notification_relay(fds[0])
        else:
            for fd in fds:
                os.close(fd)
        return bool(line)

    def start_notification_relay(self, bus_fd):
        """Notifications from the vault's bus to the host's (nsshell.notifyrelay)."""
        try:
            from nsshell import notifyrelay

            notifyrelay.start(bus_fd, "SESSION")
        except Exception as exc:  # noqa: BLE001 - notifications fail; the log says why
            os.close(bus_fd)
            sys.stderr.write(f"nsshell-holder: notification relay not started: {exc!r}\n")

    def finish(self, keeper_fd, failure=None):
        keeper_code = 0
        try:
            keeper_code = os.waitstatus_to_exitcode(os.waitpid(self.keeper_pid, 0)[1])
        except ChildProcessError:
            pass
        os.close(keeper_fd)
        if self.backend is not None:
            # After the unmount gocryptfs sees ENODEV and exits by itself.  If the
            # keeper was killed while sessions still hold the namespace, the mount
            # lives on in them: stop the backend so it cannot outlive its holder.
            deadline = time.monotonic() + BACKEND_EXIT_GRACE
            while self.backend_exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.backend is not None:
                # SIGTERM first (gocryptfs exits cleanly on it), SIGKILL if it
                # does not: locking ends with every holder process gone.
                pid, pidfd = self.backend
                for signum in (signal.SIGTERM, signal.SIGKILL):
                    _signal_pidfd(pidfd, signum)
                    deadline = time.monotonic() + BACKEND_EXIT_GRACE
                    while self.backend_exit_code() is None and time.monotonic() < deadline:
                        time.sleep(0.02)
                    if self.backend is None:
                        break
        plan.remove_placeholders(self.placeholders)  # what is still exactly as made
        try:
            os.unlink(paths.socket_path(self.name, self.runtime_dir))
        except OSError:
            pass  # gone, or something else (a directory) took its place: not ours to remove
        cleanup_runtime_files(self.name, self.runtime_dir, keep_log=keeper_code == KEEPER_BUG_EXIT)
        self.report_failure(failure or _line(f"ERR {FAILURE} the vault's holder stopped while opening it"))


def main(argv):
    """Entry point; argv is NAME RUNTIME_DIR SPEC_FD PASSPHRASE_FD STATUS_FD
    (see nsshell.unlock.holder_command_line).

    Forks once more and returns at once, so that the supervisor is adopted by
    init (or the session's subreaper) instead of becoming a child of whatever
    command the client execs next."""
    spec_fd, passphrase_fd, status_fd = (int(x) for x in argv[2:])
    # The holder and gocryptfs live as long as the vault is open: keep none
    # of the caller's fds (`exec 7<file; nsshell open v` would keep file open
    # in all three) and not its cwd (which would stay busy).
    os.chdir("/")
    _close_fds_except(0, 1, 2, spec_fd, passphrase_fd, status_fd)
    # pass_fds made these inheritable; gocryptfs must not inherit the status
    # socket, or the client would wait for gocryptfs to exit before it sees EOF.
    for fd in (passphrase_fd, status_fd):
        os.set_inheritable(fd, False)
    # Non-dumpable before the client (which waits for this process to exit)
    # sends the passphrase: the supervisor forked below inherits it, so no
    # other process of the user can take the passphrase socket from it.
    kernel.make_undumpable()
    with os.fdopen(spec_fd, "rb") as f:
        spec = marshal.loads(f.read())  # from our own client over a private socket
    try:
        paths.check_private_dir(spec["runtime_dir"])
    except NsshellError as exc:
        os.write(status_fd, errors.to_line(exc))
        return UNSAFE
    if os.fork() != 0:
        os._exit(0)
    # Our stdout/stderr and gocryptfs's go to the vault's log (0600, runtime dir),
    # a new file: never one planted there, nor what a planted symlink points at.
    log = paths.log_path(spec["name"], spec["runtime_dir"])
    try:
        log_fd = paths.create_private_file(log)
    except OSError as exc:
        os.write(status_fd, errors.to_line(paths.runtime_file_error(log, exc)))
        os._exit(1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    supervisor_pid = os.getpid()
    supervisor = Supervisor(spec, passphrase_fd, status_fd)
    try:
        supervisor.run()
    except NsshellError as exc:
        if os.getpid() != supervisor_pid or supervisor.keeper_pid is not None:
            raise  # the keeper's, or a later failure: not this early one
        # Before the keeper exists (a full runtime directory, say): the
        # client gets the one line; the log gets it too if it has room.
        try:
            os.write(2, _line(f"nsshell-holder: {exc}"))
        except OSError:
            pass
        cleanup_runtime_files(spec["name"], spec["runtime_dir"])
        supervisor.report_failure(errors.to_line(exc))
    os._exit(0)


def _close_fds_except(*keep):
    """Close every fd of this process but those in keep."""
    low = 0
    for fd in sorted(set(keep)):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, MAX_FD)


MAX_FD = 1 << 20  # os.closerange uses close_range(2): the bound costs nothing


if __name__ == "__main__":
    main(sys.argv[1:])
