"""Lock a vault by itself: on suspend, screen lock, logout, and when idle.

Runs as threads of the vault's holder supervisor (nsshell.holder), started
after the vault is READY, so there is no daemon for the user to start and
unlocking is no slower.  The threads end with the holder.  Each trigger
locks the way ``nsshell lock --force`` does, through the keeper's control
socket (``LOCK force reason=WORD``): sessions get SIGHUP first, so shells save
their history into the vault, and the keeper tells them why
(nsshell.lockreason).

Triggers (per vault ``lock_on``, default all three; ``idle_lock`` apart):

- ``suspend``: logind's ``Manager.PrepareForSleep(true)`` on the system bus.
- ``screen-lock``: logind's ``Session.Lock`` for the session the vault was
  opened from (``XDG_SESSION_ID``, else ``GetSessionByPID``), and
  ``ActiveChanged(true)`` of org.freedesktop / org.gnome / org.xfce
  ``ScreenSaver`` on the session bus.
- ``logout``: logind's ``Manager.SessionRemoved`` for that session.
- ``idle_lock``: no file activity in the vault for that long, measured by
  counting FUSE requests (the kernel signals the supervisor on each one),
  else from the backend's /proc/PID/io, else from its CPU time.

D-Bus is spoken with jeepney (pure Python; secretstorage uses it too), and
only here, never on the unlock or run paths.  The system bus is found the
standard way (DBUS_SYSTEM_BUS_ADDRESS, else /run/dbus/system_bus_socket);
without a bus nothing breaks: the vault just does not lock on its events, the
log says so, and ``nsshell doctor`` reports it.
"""

import os
import signal
import sys
import threading
import time
import traceback

from nsshell import client

LOGIN1 = "org.freedesktop.login1"
LOGIN1_PATH = "/org/freedesktop/login1"
MANAGER = "org.freedesktop.login1.Manager"
SESSION = "org.freedesktop.login1.Session"
SCREENSAVERS = ("org.freedesktop.ScreenSaver", "org.gnome.ScreenSaver", "org.xfce.ScreenSaver")
BUS_RETRY = 10.0  # seconds between attempts to reach a bus that went away
BUS_TIMEOUT = 5.0  # for one method call to logind


def log(message):
    """The supervisor's stderr is the vault's log (runtime dir, 0600)."""
    sys.stderr.write(f"nsshell-autolock: {message}\n")
    sys.stderr.flush()


class Locker:
    """Locks one vault through its keeper, once."""

    def __init__(self, spec):
        self.name = spec["name"]
        self.runtime_dir = spec["runtime_dir"]
        self._done = threading.Lock()

    def lock(self, word):
        if not self._done.acquire(blocking=False):
            return  # another trigger is locking it already
        log(f"locking {self.name!r}: {word}")
        try:
            client.request(self.name, f"LOCK force reason={word}", self.runtime_dir)
        except Exception as exc:  # noqa: BLE001 - logged; the keeper may be locking already
            log(f"could not ask the keeper to lock {self.name!r}: {exc!r}")
            self._done.release()


def start(spec, backend_pid, fuse_requests=None):
    """Start the watchers this vault's settings ask for; returns the threads.

    fuse_requests: a pipe that gets the byte SIGIO for FUSE requests of the
    vault (nsshell.holder.Supervisor.count_fuse_requests), or None."""
    locker = Locker(spec)
    triggers = set(spec.get("lock_on", ()))
    watchers = []
    if triggers:
        watchers.append(("system-bus", lambda: watch_system_bus(locker, triggers)))
    if "screen-lock" in triggers:
        watchers.append(("session-bus", lambda: watch_session_bus(locker)))
    idle = spec.get("idle_lock", 0)
    if idle:
        watchers.append(("idle", lambda: watch_idle(locker, idle, ActivityProbe(backend_pid, fuse_requests))))
    threads = []
    for label, body in watchers:
        thread = threading.Thread(target=_guarded, args=(label, body, locker), name=f"autolock-{label}", daemon=True)
        thread.start()
        threads.append(thread)
    return threads


def _guarded(label, body, locker):
    """A watcher that fails in a way nobody planned for locks the vault:
    it must never go quiet and leave the vault open by mistake."""
    try:
        body()
    except Exception:  # noqa: BLE001 - logged, then fail safe
        log(f"{label} watcher failed; locking the vault to be safe:\n{traceback.format_exc()}")
        locker.lock("autolock-failed")


# --- D-Bus -----------------------------------------------------------------------------


def _connect(bus):
    """A jeepney blocking connection, or None (with the reason logged) if there is no such bus."""
    from jeepney.io.blocking import open_dbus_connection

    try:
        return open_dbus_connection(bus=bus)
    except (OSError, KeyError, ValueError) as exc:
        # KeyError: DBUS_SESSION_BUS_ADDRESS unset; OSError: no socket, refused, auth failed.
        log(f"no {bus.lower()} bus ({exc!r})")
        return None


def _call(conn, path, interface, method, signature="", args=(), destination=LOGIN1):
    from jeepney import DBusAddress, new_method_call
    from jeepney.wrappers import unwrap_msg

    address = DBusAddress(path, bus_name=destination, interface=interface)
    reply = conn.send_and_get_reply(new_method_call(address, method, signature, tuple(args)), timeout=BUS_TIMEOUT)
    return unwrap_msg(reply)


def _add_matches(conn, rules):
    from jeepney.bus_messages import message_bus
    from jeepney.wrappers import unwrap_msg

    for rule in rules:
        unwrap_msg(conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=BUS_TIMEOUT))


def my_session_path(conn):
    """The logind object path of the session this vault was opened from, or None.

    From XDG_SESSION_ID where set (Manager.GetSession); else GetSessionByPID,
    because some Wayland set-ups do not set it (KeePassXC does the same)."""
    from jeepney.wrappers import DBusErrorResponse

    session_id = os.environ.get("XDG_SESSION_ID", "")
    try:
        if session_id:
            return _call(conn, LOGIN1_PATH, MANAGER, "GetSession", "s", (session_id,))[0]
        return _call(conn, LOGIN1_PATH, MANAGER, "GetSessionByPID", "u", (os.getpid(),))[0]
    except (DBusErrorResponse, TimeoutError) as exc:
        log(f"logind does not know this session ({exc!r}); screen lock and logout come only from the session bus")
        return None


def system_bus_rules(triggers, session_path):
    """(match rule, trigger word, predicate on the signal's body) for the system bus."""
    from jeepney import MatchRule

    rules = []
    if "suspend" in triggers:
        rule = MatchRule(type="signal", sender=LOGIN1, path=LOGIN1_PATH, interface=MANAGER, member="PrepareForSleep")
        rules.append((rule, "suspend", lambda body: bool(body and body[0] is True)))
    if session_path and "screen-lock" in triggers:
        rule = MatchRule(type="signal", sender=LOGIN1, path=session_path, interface=SESSION, member="Lock")
        rules.append((rule, "screen-lock", lambda body: True))
    if session_path and "logout" in triggers:
        rule = MatchRule(type="signal", sender=LOGIN1, path=LOGIN1_PATH, interface=MANAGER, member="SessionRemoved")
        rules.append((rule, "logout", lambda body: len(body) == 2 and body[1] == session_path))
    return rules


def session_bus_rules():
    from jeepney import MatchRule

    return [
        (MatchRule(type="signal", interface=iface, member="ActiveChanged"), "screen-lock", lambda body: bool(body and body[0] is True))
        for iface in SCREENSAVERS
    ]


def _listen(conn, rules, locker, bus):
    """Until the connection drops: lock on the first signal that matches.

    The bus daemon filters by sender (it resolves org.freedesktop.login1 to
    its current owner); messages carry the owner's unique name, so the local
    check leaves the sender out."""
    import copy

    _add_matches(conn, [rule for rule, _, _ in rules])
    local = []
    for rule, word, wanted in rules:
        without_sender = copy.copy(rule)
        without_sender.header_fields = {k: v for k, v in rule.header_fields.items() if k != "sender"}
        local.append((without_sender, word, wanted))
    log(f"watching the {bus} bus for: {', '.join(sorted({word for _, word, _ in rules}))}")
    while True:
        message = conn.receive()
        for rule, word, wanted in local:
            if rule.matches(message) and wanted(message.body):
                locker.lock(word)


def watch_system_bus(locker, triggers):
    first = True
    while True:
        conn = _connect("SYSTEM")
        if conn is None:
            if first:
                log("lock on suspend, screen lock and logout is unavailable (no system bus)")
                return
            time.sleep(BUS_RETRY)
            continue
        try:
            session_path = my_session_path(conn) if triggers & {"screen-lock", "logout"} else None
            rules = system_bus_rules(triggers, session_path)
            if not rules:
                return
            first = False
            _listen(conn, rules, locker, "system")
        except (OSError, EOFError, ConnectionError) as exc:
            log(f"lost the system bus ({exc!r}); reconnecting")
            first = False
            time.sleep(BUS_RETRY)
        finally:
            conn.close()


def watch_session_bus(locker):
    conn = _connect("SESSION")
    if conn is None:
        log("screen-saver signals unavailable (no session bus); logind's Session.Lock still counts")
        return
    try:
        _listen(conn, session_bus_rules(), locker, "session")
    except (OSError, EOFError, ConnectionError) as exc:
        # The session bus goes away at logout; logind's SessionRemoved covers that.
        log(f"lost the session bus ({exc!r})")
    finally:
        conn.close()


# --- idle --------------------------------------------------------------------------------


class ActivityProbe:
    """A number that changes whenever the vault's files are used.

    Every use of the vault's files (a stat as much as a read) is a FUSE
    request, and the kernel signals the supervisor on each one it queues
    (nsshell.kernel.signal_on_fuse_requests); the signals arrive here as
    bytes on a pipe, and their count is the number.  It works whatever
    gocryptfs is, dumpable or not, and stays still when nobody uses the vault
    (measured in docs/desktop.md: no request in minutes of idleness, while
    the backend's Go runtime wakes up for a garbage collection every two
    minutes, which CPU-based measures cannot tell from one `ls`).

    Where the signals could not be set up: the backend's read and write
    counters in /proc/PID/io (it reads every request from the FUSE fd), and
    where that is not readable (a gocryptfs made non-dumpable by a root-owned
    0711 binary), its CPU time in /proc/PID/stat, which anyone may read.
    That is coarse: it counts in 10 ms ticks, one `ls` costs less than a
    tick, and Go's periodic garbage collection adds a tick every few minutes
    to an idle gocryptfs (measured: 1 tick in 300 s idle, 12 ticks for 200
    `ls`).  So there only 2 ticks or more between two checks count as use."""

    CPU_TICKS_OF_USE = 2
    SIGIO = bytes([signal.SIGIO])  # what the wakeup fd carries for it: the signal's number

    def __init__(self, backend_pid, fuse_requests=None):
        self.pid = backend_pid
        self.fuse_requests = fuse_requests
        self.requests_seen = 0
        self.source = "fuse-requests" if fuse_requests is not None else "io"

    def moved(self, before, now):
        """Whether the vault was used between two readings."""
        if before is None or now is None:
            return before != now
        if self.source == "cpu":
            return now - before >= self.CPU_TICKS_OF_USE or now < before
        return now != before

    def read(self):
        if self.pid is None:
            return None
        if self.source == "fuse-requests":
            return self._count_requests()
        if self.source == "io":
            try:
                with open(f"/proc/{self.pid}/io", "rb") as f:
                    fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
                return int(fields[b"rchar"]) + int(fields[b"wchar"])
            except PermissionError:
                self.source = "cpu"
                log("the backend's /proc/PID/io is not readable; measuring idleness by its CPU time")
            except (OSError, KeyError, ValueError):
                return None
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                raw = f.read()
            fields = raw[raw.rindex(b")") + 2 :].split()
            return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, ValueError, IndexError):
            return None

    def _count_requests(self):
        """Requests signalled so far; None once the backend is gone (the holder is ending)."""
        if not os.path.exists(f"/proc/{self.pid}"):
            return None
        while True:
            try:
                chunk = os.read(self.fuse_requests, 65536)
            except BlockingIOError:
                return self.requests_seen
            if not chunk:
                return None
            self.requests_seen += chunk.count(self.SIGIO)


def watch_idle(locker, idle_seconds, probe, clock=time.monotonic, sleep=time.sleep):
    """Lock once the probe has not moved for idle_seconds."""
    interval = max(1.0, min(60.0, idle_seconds / 10))
    last = probe.read()
    quiet_since = clock()
    log(f"idle lock after {idle_seconds}s without file activity (checked every {interval:.0f}s, by {probe.source})")
    while True:
        sleep(interval)
        source = probe.source
        now = probe.read()
        if now is None:
            return  # the backend is gone: the holder is ending anyway
        moved = probe.moved(last, now)
        last = now
        if moved or probe.source != source:
            quiet_since = clock()
        elif clock() - quiet_since >= idle_seconds:
            locker.lock("idle")
            return


# --- doctor ------------------------------------------------------------------------------


def availability():
    """(status, detail, fix) for 'nsshell doctor': can vaults lock by themselves here?"""
    from jeepney.bus_messages import message_bus
    from jeepney.wrappers import unwrap_msg

    found, missing = [], []
    conn = _quiet_connect("SYSTEM")
    if conn is None:
        missing.append("no system bus, so no lock on suspend, screen lock or logout from logind")
    else:
        try:
            (has_logind,) = unwrap_msg(conn.send_and_get_reply(message_bus.NameHasOwner(LOGIN1), timeout=BUS_TIMEOUT))
        except Exception as exc:  # noqa: BLE001 - reported, not hidden
            has_logind = False
            missing.append(f"the system bus did not answer ({exc!r})")
        finally:
            conn.close()
        if has_logind:
            found.append("logind (suspend, screen lock, logout)")
        else:
            missing.append("no logind on the system bus (elogind or systemd-logind), so no lock on suspend or logout")
    conn = _quiet_connect("SESSION")
    if conn is None:
        missing.append("no session bus here, so no ScreenSaver.ActiveChanged")
    else:
        conn.close()
        found.append("the session bus (screen savers)")
    detail = ("listens to " + " and ".join(found)) if found else "auto-lock is unavailable"
    if missing:
        detail += "; " + "; ".join(missing)
    if not found:
        return "warn", detail, "vaults still lock with 'nsshell lock', when their last session ends, and by idle_lock"
    return ("warn" if missing else "ok"), detail, "see docs/desktop.md (i3lock and slock send no signal at all)"


def _quiet_connect(bus):
    from jeepney.io.blocking import open_dbus_connection

    try:
        return open_dbus_connection(bus=bus)
    except (OSError, KeyError, ValueError):
        return None
