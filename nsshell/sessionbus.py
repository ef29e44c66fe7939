"""The vault's private session bus: one dbus-daemon per vault, inside its
namespace (issue 11; what happens without it: /work/shared/GUI-FACTS.md).

Single-instance GUI programs hand their work to an instance already on the
session bus.  On the host's bus that instance runs outside the vault: it
cannot see the file, opens an empty document at the vault's path and saves
it in plaintext onto the host disk.  So every session of a vault gets the
vault's own bus (``dbus = "vault"``, the default), shared by all sessions of
that vault, and the host's bus is hidden inside (nsshell.plan).

Where it lives.  At unlock the keeper mounts a small tmpfs (mode 0700) over
paths.bus_dir(NAME), which on the host stays an empty directory in nsshell's
runtime directory, and binds the bus socket there: ``unix:path=``, never an
abstract socket, and visible only inside the vault's namespace.

When it runs.  The keeper holds the listening socket and starts dbus-daemon
only when something connects (socket activation: dbus-daemon's address
``systemd:`` takes the socket as fd 3), and stops it, with everything it
started, when the last session ends and the vault stays open (``hold``, or
the linger time).  dbus-daemon is exec'd inside the vault's user namespace,
so, like a session, any process of the user may walk its /proc/PID/root
into the vault (NAMESPACE-FACTS 8); a vault open with no session must have
no such process.  And `nsshell run` on an open vault costs nothing more
unless the command uses the bus.

Who it is.  The daemon starts in a mount namespace of its own, a copy of the
vault's made just before exec.  It and every process it starts (bus-activated
services such as dconf-service or evince's daemon, even after they
reparent) are recognised by that namespace: they are the vault's *services*,
not sessions.  They do not keep the vault open (nsshell.holder), and they
end when it locks.

Its environment, which bus-activated services inherit, is chosen on purpose:
service_environment() is the one place that decides it.
"""

import os

from nsshell import kernel, paths
from nsshell.stateenv import GUI_STATE_XDG, gui_state_env

SOCKET_NAME = "bus"
CONFIG_NAME = "bus.conf"
SERVICES_NAME = "services"  # .service files of nsshell's own (the notification relay's waiter)
LISTEN_FD = 3  # SD_LISTEN_FDS_START: where dbus-daemon's "systemd:" address looks
STOP_GRACE = 3.0  # seconds services get to exit on SIGTERM before SIGKILL

# What the bus and the services it starts inherit from the environment the
# vault was opened in: the display, the user's locale, where programs and
# data are, and the session's XDG context.  Nothing else: no host bus
# address, no SSH or GPG agent, no TMPDIR pointing outside the vault.
SERVICE_ENV_NAMES = (
    "HOME", "USER", "LOGNAME", "SHELL", "PATH",
    "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY",
    "LANG", "LANGUAGE", "TZ",
    "XDG_RUNTIME_DIR", "XDG_DATA_DIRS", "XDG_CONFIG_DIRS",
    "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME",
    "XDG_CURRENT_DESKTOP", "XDG_SESSION_DESKTOP", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS",
    "DESKTOP_SESSION", "GTK_THEME", "QT_QPA_PLATFORMTHEME", "QT_STYLE_OVERRIDE", "XCURSOR_THEME", "XCURSOR_SIZE",
)
SERVICE_ENV_PREFIXES = ("LC_",)


def service_environment(environ, spec):
    """The environment of the vault's dbus-daemon (and so of every service
    it starts): environ filtered through the allow-list above, plus what
    the vault's context sets (extra_environment)."""
    env = {k: v for k, v in environ.items() if k in SERVICE_ENV_NAMES or k.startswith(SERVICE_ENV_PREFIXES)}
    env.update(extra_environment(spec, environ))
    env["DBUS_SESSION_BUS_ADDRESS"] = paths.bus_address(spec["name"], spec["runtime_dir"])
    env["NSSHELL_VAULT"] = spec["name"]
    env["NSSHELL_MOUNTPOINT"] = spec["mountpoint"]
    return env


def extra_environment(spec, environ):
    """Variables the vault's context sets for its services, as it does for
    sessions: the XDG data, cache and state homes in the vault, and the
    vault's dconf profile (nsshell.stateenv.gui_state_env), so that
    dconf-service writes the same database the programs inside read.
    The vault's private /tmp needs no TMPDIR: it is simply not passed on."""
    names = ["HOME", "XDG_DATA_DIRS", *(variable for variable, _ in GUI_STATE_XDG)]
    env = {name: environ[name] for name in names if name in environ}
    before = dict(env)
    gui_state_env(env, spec["mountpoint"])
    return {name: value for name, value in env.items() if before.get(name) != value}


def host_bus_sockets(environ):
    """The socket files of the host's session bus that programs inside could
    find: every unix:path= of DBUS_SESSION_BUS_ADDRESS, and
    $XDG_RUNTIME_DIR/bus (where libdbus, GDBus and sd-bus look when the
    variable is unset).  An abstract socket (unix:abstract=, what
    unix:tmpdir= gives) has no file to cover: see docs/gui.md."""
    found = []
    for entry in (environ.get("DBUS_SESSION_BUS_ADDRESS") or "").split(";"):
        transport, _, options = entry.partition(":")
        if transport != "unix":
            continue
        for option in options.split(","):
            key, _, value = option.partition("=")
            if key == "path" and value:
                found.append(_unescape(value))
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        found.append(os.path.join(runtime, "bus"))
    return list(dict.fromkeys(p for p in found if os.path.isabs(p)))


def _unescape(value):
    raw = value.encode()
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"%" and i + 2 < len(raw) + 1:
            try:
                out.append(int(raw[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return os.fsdecode(bytes(out))


def config_text(directory):
    """dbus-daemon's configuration: a session bus (the same policy as
    Debian's session.conf: the user's own bus, open to the user), whose
    listening socket comes from the keeper, and with nsshell's own service
    directory first so that its .service files win over the host's."""
    services = _xml(os.path.join(directory, SERVICES_NAME))
    return f"""<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <keep_umask/>
  <listen>systemd:</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{services}</servicedir>
  <standard_session_servicedirs/>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _xml(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def prepare_directory(directory):
    """In the keeper, before any session: the host's empty directory,
    covered by a 0700 tmpfs of this namespace that holds the configuration.
    Returns the socket's path."""
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        paths.check_private_dir(directory)  # left by a holder that was killed: ours, or refused
    kernel.mount_tmpfs(directory, mode=0o700, size="1m")
    os.mkdir(os.path.join(directory, SERVICES_NAME), 0o700)
    _write(os.path.join(directory, CONFIG_NAME), config_text(directory))
    _write(os.path.join(directory, SERVICES_NAME, "org.freedesktop.Notifications.service"), NOTIFICATIONS_WAITER.format(
        sleep=find_program("sleep", os.environ) or "/bin/sleep"))
    return os.path.join(directory, SOCKET_NAME)


# The notification relay (nsshell.notifyrelay) takes its name on the bus
# from outside, within milliseconds of the bus starting.  A client that calls
# before then starts this instead, through D-Bus activation: it only waits,
# and the call goes to the relay as soon as the relay owns the name (the
# host's own notification daemon, whose .service file the standard
# directories may hold, must not start inside the vault).  It ends on its
# own, or with the bus.
NOTIFICATIONS_WAITER = """[D-BUS Service]
Name=org.freedesktop.Notifications
Exec={sleep} 10
"""


def _write(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def find_program(name, environ):
    """name's path on the PATH the vault was opened with, or None."""
    for directory in (environ.get("PATH") or "/usr/bin:/bin").split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isabs(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


REPORT_FD = 4  # in the child until exec: close-on-exec, so EOF says "exec'd"


def _only_fds(listener, report):
    """In the daemon's child before exec: stdin /dev/null, stdout and stderr
    kept (the vault's log), the listening socket at LISTEN_FD (inheritable),
    the report pipe at REPORT_FD (close-on-exec), and nothing else."""
    import fcntl

    high_listener = fcntl.fcntl(listener, fcntl.F_DUPFD_CLOEXEC, 1000)
    high_report = fcntl.fcntl(report, fcntl.F_DUPFD_CLOEXEC, 1000)
    os.dup2(high_listener, LISTEN_FD)  # dup2 makes the copy inheritable
    os.dup2(high_report, REPORT_FD, inheritable=False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.closerange(REPORT_FD + 1, 1 << 20)  # close_range(2) underneath


class SessionBus:
    """The keeper's side of the bus: the listening socket, the daemon, and
    the mount namespaces its processes are recognised by."""

    def __init__(self, spec, environ):
        self.spec = spec
        self.directory = paths.bus_dir(spec["name"], spec["runtime_dir"])
        self.socket_path = os.path.join(self.directory, SOCKET_NAME)
        self.environment = service_environment(environ, spec)
        self.daemon_path = find_program("dbus-daemon", environ)
        self.listener = None
        self.pid = None
        self.pidfd = None
        # Every mount namespace a daemon of ours started in: services of a
        # daemon that died (and was started again) are services still.
        self.namespaces = set()

    def listen(self):
        """Bind the bus socket (in the keeper's tmpfs); nothing answers on it
        until start()."""
        import _socket

        old_umask = os.umask(0o077)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            kernel.with_unix_path(sock.bind, self.socket_path)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        self.listener = sock

    @property
    def running(self):
        return self.pid is not None

    def start(self):
        """Start dbus-daemon on the listening socket, in a mount namespace of
        its own.  Returns once it has exec'd (or raises OSError)."""
        if self.daemon_path is None:
            raise FileNotFoundError(2, "dbus-daemon is not installed (Debian: apt install dbus-daemon)")
        argv = [self.daemon_path, f"--config-file={os.path.join(self.directory, CONFIG_NAME)}",
                "--nofork", "--nopidfile", "--address=systemd:"]
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:  # the child: single-threaded like the keeper it was forked from
            try:
                os.close(report_r)
                kernel.unshare_mount_namespace()
                _only_fds(self.listener.fileno(), report_w)
                report_w = REPORT_FD
                env = {**self.environment, "LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1"}
                os.execve(argv[0], argv, env)
            except BaseException as exc:
                try:
                    os.write(report_w, f"{exc}".encode(errors="replace")[:500])
                finally:
                    os._exit(127)
        os.close(report_w)
        try:
            problem = b""
            while True:
                chunk = os.read(report_r, 512)  # EOF at exec (the pipe is close-on-exec)
                if not chunk:
                    break
                problem += chunk
        finally:
            os.close(report_r)
        if problem:
            os.waitpid(pid, 0)
            raise OSError(0, f"cannot start the vault's session bus: {problem.decode(errors='replace')}")
        self.pid = pid
        self.pidfd = kernel.pidfd_open(pid)
        try:
            self.namespaces.add(kernel.namespace_id("mnt", pid))
        except OSError:
            pass  # gone already: exited() reports it
        return pid

    def exited(self):
        """The daemon's exit status text once it has exited (it is reaped
        here), else None."""
        if self.pid is None:
            return None
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            done, status = self.pid, 0
        if done == 0:
            return None
        os.close(self.pidfd)
        self.pid = self.pidfd = None
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit code {os.waitstatus_to_exitcode(status)}"

    def connect(self):
        """A socket connected to the bus (for the notification relay, which
        cannot reach the socket's path from outside the namespace)."""
        import _socket

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
        try:
            kernel.with_unix_path(sock.connect, self.socket_path)
        except BaseException:
            sock.close()
            raise
        return sock

    def is_service(self, mount_ns):
        return mount_ns in self.namespaces

    def service_pids(self):
        """Every process in one of the daemons' mount namespaces (the daemon too)."""
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.readlink(f"/proc/{entry}/ns/mnt") in self.namespaces:
                        found.append(int(entry))
                except OSError:
                    continue
        return found

    def signal_services(self, signum):
        """Send signum to every service; returns how many were signalled."""
        import _signal

        sent = 0
        for pid in self.service_pids():
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                # Still the same process (the pidfd pins it): in our namespace?
                if os.readlink(f"/proc/{pid}/ns/mnt") in self.namespaces:
                    _signal.pidfd_send_signal(pidfd, signum)
                    sent += 1
            except OSError:
                pass
            finally:
                os.close(pidfd)
        return sent

    def stop(self):
        """End the daemon and every service: SIGTERM, then SIGKILL after
        STOP_GRACE.  Blocks until they are gone (or SIGKILL was sent)."""
        import _signal
        import time

        if not self.signal_services(_signal.SIGTERM) and self.pid is None:
            return
        deadline = time.monotonic() + STOP_GRACE
        while time.monotonic() < deadline:
            self.exited()
            if not self.service_pids():
                break
            time.sleep(0.02)
        self.signal_services(_signal.SIGKILL)
        if self.pid is not None:
            os.waitpid(self.pid, 0)
            self.exited()
