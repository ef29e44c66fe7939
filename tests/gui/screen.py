"""A small real desktop for the GUI tests: an Xvfb X server and a host
session bus (a real dbus-daemon that activates the installed services, as a
desktop's bus does: dconf-service, evince's daemon), both private to one
test.  Programs then run on it outside a vault, or inside one with
`nsshell run`, and the tests find their windows with xdotool.

Used by tests/gui/conftest.py, and by tests/gui/timing.py for the figures in docs/gui.md.
"""

import os
import shutil
import subprocess
import time

from desktop.buses import bus_config
from reliability import end_processes

GUI_PROGRAMS = ("Xvfb", "xdotool", "xclip", "dbus-daemon", "gsettings", "mousepad", "evince", "okular", "notify-send", "import")


def wait_for(predicate, what, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Desktop:
    """Xvfb and a host session bus; env is what a desktop session's
    programs would have (the world's HOME and XDG dirs, DISPLAY, the bus)."""

    def __init__(self, directory, base_env, bus_directory=None):
        self.directory = directory
        self.bus_directory = bus_directory or directory
        self.processes = []
        self.xvfb = None
        self.display = None
        self.env = dict(base_env)
        try:
            self._start_x()
            self.env["DISPLAY"] = self.display
            self._start_bus()
        except BaseException:
            self.stop()
            raise

    def _start_x(self):
        """Xvfb on the first free display from 100 up.  (Its -displayfd
        choice failed under pytest here: "Cannot write display number".)
        Another test may take the same number at the same moment: then
        this Xvfb exits, and the next number is tried."""
        log = os.path.join(self.directory, "xvfb.log")
        for number in range(100 + os.getpid() % 300, 1000):
            if os.path.exists(f"/tmp/.X{number}-lock") or os.path.exists(f"/tmp/.X11-unix/X{number}"):
                continue
            with open(log, "wb") as out:
                self.xvfb = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                                             stdout=subprocess.DEVNULL, stderr=out)
            self.display = f":{number}"
            ready = wait_for(lambda: self.xvfb.poll() is not None or self.xdotool(
                "getdisplaygeometry", env={"DISPLAY": self.display}).returncode == 0, f"the X server at :{number}")
            if self.xvfb.poll() is None and ready:
                return
        with open(log, errors="replace") as f:
            raise AssertionError(f"no X server would start: {f.read()!r}")

    def _start_bus(self):
        os.makedirs(self.bus_directory, mode=0o700, exist_ok=True)
        self.bus_socket = os.path.join(self.bus_directory, "bus")
        config = os.path.join(self.directory, "host-bus.conf")
        with open(config, "w") as f:
            # A session bus like a desktop's: it activates what the host offers
            # (dconf-service, evince's daemon), so programs outside behave as on one.
            f.write(bus_config(self.bus_socket, host_services=True))
        self.bus_address = f"unix:path={self.bus_socket}"
        self.bus = self.start(["dbus-daemon", f"--config-file={config}", "--nofork"])
        self.env["DBUS_SESSION_BUS_ADDRESS"] = self.bus_address
        wait_for(lambda: self.dbus_send("org.freedesktop.DBus.GetId") is not None, "the host session bus")

    def dbus_send(self, method, *args, dest="org.freedesktop.DBus", path="/org/freedesktop/DBus"):
        """dbus-send --print-reply on the host bus; its output, or None on failure."""
        result = subprocess.run(
            ["dbus-send", "--session", "--print-reply", f"--dest={dest}", path, method, *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )
        return result.stdout if result.returncode == 0 else None

    def bus_names(self):
        out = self.dbus_send("org.freedesktop.DBus.ListNames") or ""
        return [line.split('"')[1] for line in out.splitlines() if line.strip().startswith("string")]

    def start(self, argv, env=None, **kw):
        """A process on this desktop (outside any vault)."""
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, env={**self.env, **(env or {})}, **kw)
        self.processes.append(proc)
        return proc

    def xdotool(self, *args, timeout=120, env=None):
        result = subprocess.run(["xdotool", *args], env={**self.env, **(env or {})}, capture_output=True, text=True,
                                timeout=timeout)
        return result

    def windows(self, name):
        """Ids of the mapped windows whose title matches the regex name."""
        out = self.xdotool("search", "--onlyvisible", "--name", name).stdout
        return [w for w in out.split()]

    def wait_window(self, name, timeout=180, exclude=()):
        return wait_for(lambda: [w for w in self.windows(name) if w not in exclude], f"a window named {name!r}", timeout)[0]

    def window_pid(self, window):
        out = self.xdotool("getwindowpid", window).stdout.strip()
        return int(out) if out.isdigit() else None

    def window_title(self, window):
        return self.xdotool("getwindowname", window).stdout.strip()

    def focus(self, window):
        self.xdotool("windowfocus", "--sync", window)

    def type(self, window, text):
        self.focus(window)
        self.xdotool("type", "--delay", "20", text)

    def key(self, window, *keys):
        self.focus(window)
        self.xdotool("key", "--delay", "50", *keys)

    def screenshot(self, path, window="root"):
        subprocess.run(["import", "-display", self.display, "-window", window, str(path)],
                       check=True, timeout=120, capture_output=True)

    def stop(self):
        end_processes(([self.xvfb] if self.xvfb is not None else []) + self.processes)  # Xvfb last


def missing_programs():
    return [p for p in GUI_PROGRAMS if not shutil.which(p)]
