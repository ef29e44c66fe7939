"""Real D-Bus daemons for the desktop tests: a private dbus-daemon standing in
for the system bus with python-dbusmock's logind template on it, a private
session bus with a mock org.freedesktop.ScreenSaver, and a real
gnome-keyring-daemon unlocked with a test password.

dbusmock runs under Debian's /usr/bin/python3 (python3-dbusmock needs
dbus-python, which the venv does not have); the tests talk to it with jeepney.
"""

import os
import subprocess
import time

import pytest

from conftest import need_program as need
from reliability import end_processes

DBUSMOCK_PYTHON = "/usr/bin/python3"
MOCK = "org.freedesktop.DBus.Mock"
LOGIN1 = "org.freedesktop.login1"
SESSION_ID = "c7"
SESSION_PATH = f"/org/freedesktop/login1/session/{SESSION_ID}"
KEYRING_PASSWORD = "keyring test password"

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>{servicedirs}
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def bus_config(socket, host_services=False):
    """A test session bus listening at socket; with host_services it also
    activates what /usr/share/dbus-1/services offers, as a desktop's does."""
    servicedirs = "\n  <standard_session_servicedirs/>" if host_services else ""
    return BUS_CONFIG.format(socket=socket, servicedirs=servicedirs)


def need_dbusmock():
    need(DBUSMOCK_PYTHON)
    probe = subprocess.run([DBUSMOCK_PYTHON, "-c", "import dbusmock"], capture_output=True)
    if probe.returncode != 0:
        if os.environ.get("NSSHELL_REQUIRE_KERNEL") == "1":
            pytest.fail("python3-dbusmock is not installed, and NSSHELL_REQUIRE_KERNEL=1 (scripts/lib.sh installs it)")
        pytest.skip("python3-dbusmock is not installed (apt install python3-dbusmock)")


def wait_for(predicate, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Bus:
    """One private dbus-daemon, and the processes started on it."""

    def __init__(self, directory, label, socket=None):
        need("dbus-daemon")
        self.socket = socket or os.path.join(directory, f"{label}.bus")
        self.address = f"unix:path={self.socket}"
        config = os.path.join(directory, f"{label}.conf")
        with open(config, "w") as f:
            f.write(bus_config(self.socket))
        self.processes = []
        self.daemon = self.start(["dbus-daemon", f"--config-file={config}", "--nofork"])
        # The socket file appears at bind(), before the daemon listens: wait
        # until a connection is accepted, not until the file exists.
        wait_for(self.accepts_connections, f"{label} bus socket")

    def accepts_connections(self):
        try:
            self.connect().close()
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        return True

    def start(self, argv, **kw):
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.processes.append(proc)
        return proc

    def connect(self):
        from jeepney.io.blocking import open_dbus_connection

        return open_dbus_connection(bus=self.address)

    def call(self, destination, path, interface, method, signature="", args=()):
        from jeepney import DBusAddress, new_method_call
        from jeepney.wrappers import unwrap_msg

        conn = self.connect()
        try:
            address = DBusAddress(path, bus_name=destination, interface=interface)
            return unwrap_msg(conn.send_and_get_reply(new_method_call(address, method, signature, tuple(args)), timeout=30))
        finally:
            conn.close()

    def has_name(self, name):
        from jeepney.bus_messages import message_bus
        from jeepney.wrappers import unwrap_msg

        conn = self.connect()
        try:
            return unwrap_msg(conn.send_and_get_reply(message_bus.NameHasOwner(name), timeout=30))[0]
        finally:
            conn.close()

    def emit(self, destination, path, interface, member, signature, args):
        """Have the mock object at path emit a signal (dbusmock's EmitSignal)."""
        variants = [(sig, value) for sig, value in zip(_split_signature(signature), args)]
        self.call(destination, path, MOCK, "EmitSignal", "sssav", (interface, member, signature, variants))

    def stop(self):
        end_processes(self.processes)


def _split_signature(signature):
    # Only the basic types the tests emit: one character each.
    return list(signature)


class SystemBus(Bus):
    """A system bus with dbusmock's logind, which knows one session (SESSION_ID) of ours."""

    def __init__(self, directory):
        need_dbusmock()
        super().__init__(directory, "system")
        env = {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address}
        self.start([DBUSMOCK_PYTHON, "-m", "dbusmock", "--system", "--template", "logind"], env=env)
        wait_for(lambda: self.has_name(LOGIN1), "the mock logind on the system bus")
        self.call(LOGIN1, "/org/freedesktop/login1", MOCK, "AddSession", "ssusb",
                  (SESSION_ID, "seat0", os.getuid(), "tester", True))

    def prepare_for_sleep(self, going):
        self.emit(LOGIN1, "/org/freedesktop/login1", "org.freedesktop.login1.Manager", "PrepareForSleep", "b", [going])

    def lock_session(self, session_id=SESSION_ID):
        # The template's Session.Lock() method emits the Session.Lock signal, as logind does.
        self.call(LOGIN1, f"/org/freedesktop/login1/session/{session_id}", "org.freedesktop.login1.Session", "Lock")

    def remove_session(self, session_id=SESSION_ID):
        path = f"/org/freedesktop/login1/session/{session_id}"
        self.emit(LOGIN1, "/org/freedesktop/login1", "org.freedesktop.login1.Manager", "SessionRemoved", "so",
                  [session_id, path])


class SessionBus(Bus):
    """A session bus with a mock org.freedesktop.ScreenSaver."""

    NAME = "org.freedesktop.ScreenSaver"
    PATH = "/org/freedesktop/ScreenSaver"

    def __init__(self, directory, screensaver=True, socket=None):
        super().__init__(directory, "session", socket)
        if screensaver:
            need_dbusmock()
            env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": self.address}
            self.start([DBUSMOCK_PYTHON, "-m", "dbusmock", self.NAME, self.PATH, self.NAME], env=env)
            wait_for(lambda: self.has_name(self.NAME), "the mock screen saver on the session bus")

    def screensaver_active(self, active):
        self.emit(self.NAME, self.PATH, self.NAME, "ActiveChanged", "b", [active])

    def start_keyring(self, world):
        """A real gnome-keyring-daemon (secrets only) on this bus, its login
        keyring created and unlocked with KEYRING_PASSWORD (on its stdin)."""
        need("gnome-keyring-daemon")
        env = {**world.env, "DBUS_SESSION_BUS_ADDRESS": self.address}
        proc = subprocess.Popen(
            ["gnome-keyring-daemon", "--foreground", "--unlock", "--components=secrets"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )
        self.processes.append(proc)
        proc.stdin.write(KEYRING_PASSWORD.encode())
        proc.stdin.close()
        wait_for(lambda: self.has_name("org.freedesktop.secrets"), "gnome-keyring-daemon on the session bus")


def log_of(world, name):
    try:
        return (world.runtime / "nsshell" / f"{name}.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def wait_watching(world, name, bus):
    """Until the vault's holder has subscribed to the signals of bus ('system' or 'session')."""
    wait_for(lambda: f"watching the {bus} bus" in log_of(world, name), f"{name}'s holder to watch the {bus} bus")
