"""Desktop notifications from a vault reach the host's notification service
(issue 11), shown with the GUI setup: Xvfb, a host bus that activates the
installed services, and a GUI program running inside, so the vault's bus
and its services (dconf-service) are up when notify-send calls.  The relay
itself is nsshell.notifyrelay (its tests: tests/desktop/test_bus_private.py)."""

import secrets

import pytest

from conftest import need_program

from .apps import Inside, alive, wait_locked
from .screen import wait_for

pytestmark = pytest.mark.namespaces

DBUSMOCK_PYTHON = "/usr/bin/python3"
NOTIFICATIONS = "org.freedesktop.Notifications"


def test_notify_send_inside_reaches_the_hosts_notifications(world, desktop):
    need_program(DBUSMOCK_PYTHON)
    token = secrets.token_hex(4)
    desktop.start([DBUSMOCK_PYTHON, "-m", "dbusmock", "--template", "notification_daemon"])
    wait_for(lambda: NOTIFICATIONS in desktop.bus_names(), "the notification service on the host's bus")
    editor = Inside(world, desktop, "mousepad", str(world.mountpoint("taxes") / f"doc{token}.txt"))
    desktop.wait_window(f"doc{token}")

    world.run("run", "taxes", "--", "notify-send", f"summary {token}", f"body {token}", check=True)
    calls = desktop.dbus_send("org.freedesktop.DBus.Mock.GetCalls", dest=NOTIFICATIONS,
                              path="/org/freedesktop/Notifications") or ""
    assert "Notify" in calls and f"summary {token}" in calls and f"body {token}" in calls, calls

    editor.proc.terminate()
    wait_for(lambda: not alive(editor.pid), "mousepad inside to end", 180)
    wait_locked(world)
