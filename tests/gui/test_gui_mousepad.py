"""mousepad in a vault, with an instance already running outside on the
host's bus (issue 11, GUI-FACTS 1, 4, 9-11): the vault's file opens in an
instance inside, the outside one is untouched, typing, saving and the
recent-files view leave nothing in the host's HOME (settings: see
test_gui_state), closing it locks the vault; and an outside `mousepad
VAULTPATH` never shows the vault's content."""

import os
import secrets
import subprocess

import pytest
from context.scan import scan

from .apps import Inside, alive, mount_ns, session_mount_ns, wait_locked, write_inside
from .screen import wait_for

pytestmark = pytest.mark.namespaces


def _outside_mousepad(world, desktop, token):
    host_doc = world.home / f"host{token}.txt"
    host_doc.write_text("host text\n")
    outside = desktop.start(["mousepad", str(host_doc)])
    window = desktop.wait_window(f"host{token}")
    return outside, window


def _read_inside(world, path):
    result = world.run("run", "taxes", "--", "cat", path)
    return result.stdout if result.returncode == 0 else ""


def test_mousepad_opens_inside_and_leaves_nothing_on_the_host(world, desktop):
    token = secrets.token_hex(4)
    canary = f"cnry{token}typed"
    mountpoint = world.mountpoint("taxes")
    doc = mountpoint / f"doc{token}.txt"
    # The host's desktop: mousepad running on the host's bus.
    outside, outside_window = _outside_mousepad(world, desktop, token)
    write_inside(world, doc, "first line\n")

    app = Inside(world, desktop, "mousepad", str(doc))
    window = desktop.wait_window(f"doc{token}")
    # The window belongs to a process in the vault's namespace, and it is
    # the one nsshell started (not the outside instance, handed the file).
    owner = desktop.window_pid(window)
    assert owner == app.pid, (owner, app.pid, outside.pid)
    assert mount_ns(owner) == session_mount_ns(world) != mount_ns(outside.pid)
    assert desktop.windows(f"host{token}") == [outside_window] and alive(outside.pid)

    # Type, save, look at the recent files (the open dialog), type again
    # and let the autosave write it.
    desktop.key(window, "ctrl+End")
    desktop.type(window, f"saved {canary}")
    desktop.key(window, "ctrl+s")
    wait_for(lambda: canary in _read_inside(world, doc), "the save to reach the vault's file", 180)
    desktop.key(window, "ctrl+o")
    dialog = desktop.wait_window("Open")
    desktop.key(dialog, "Escape")
    desktop.type(window, f" unsaved {canary}")
    autosave = mountpoint / ".nsshell" / "home" / ".local" / "share" / "Mousepad" / "autosave-0"
    wait_for(lambda: f"unsaved {canary}" in _read_inside(world, autosave), "mousepad's autosave, in the vault", 300)
    recent = mountpoint / ".nsshell" / "home" / ".local" / "share" / "recently-used.xbel"
    assert f"doc{token}.txt" in _read_inside(world, recent)

    # The outside instance was not touched: still its one window, its text.
    assert desktop.windows(f"host{token}") == [outside_window] and alive(outside.pid)
    assert "doc" not in desktop.window_title(outside_window)

    # Save and close it normally, and the vault locks by itself:
    # dconf-service, started for mousepad on the vault's bus, does not
    # keep it open.
    desktop.key(window, "ctrl+s")
    wait_for(lambda: f"unsaved {canary}" in _read_inside(world, doc), "the second save", 180)
    desktop.key(window, "ctrl+q")
    wait_for(lambda: not alive(app.pid), "mousepad inside to end", 180)
    wait_locked(world)

    hits = scan([world.home], [canary, f"doc{token}"], skip=[world.cipher_dir("taxes")])
    assert hits == [], hits
    assert os.listdir(mountpoint) == []


def test_outside_mousepad_never_shows_the_vault(world, desktop):
    """GUI-FACTS 4: while an instance inside owns mousepad's name on the host
    bus, an outside `mousepad VAULTPATH` reached it.  With the vault's own
    bus it cannot: the outside instance opens its own empty document."""
    token = secrets.token_hex(4)
    canary = f"cnry{token}content"
    mountpoint = world.mountpoint("taxes")
    doc = mountpoint / f"doc{token}.txt"
    write_inside(world, doc, f"vault text {canary}\n")
    world.open("taxes")
    app = Inside(world, desktop, "mousepad", str(doc))
    inside_window = desktop.wait_window(f"doc{token}")
    assert desktop.window_pid(inside_window) == app.pid

    outside = desktop.start(["mousepad", str(doc)])
    outside_window = desktop.wait_window(f"doc{token}", exclude=[inside_window])
    owner = desktop.window_pid(outside_window)
    assert owner != app.pid and mount_ns(owner) != mount_ns(app.pid)
    # What the outside window shows: select all, copy, read the clipboard.
    desktop.key(outside_window, "ctrl+a", "ctrl+c")
    shown = subprocess.run(["xclip", "-o", "-selection", "clipboard"], env=world.env, capture_output=True, text=True,
                           timeout=60).stdout
    assert canary not in shown
    # And the inside instance got no second window from outside.
    assert [w for w in desktop.windows(f"doc{token}") if desktop.window_pid(w) == app.pid] in ([], [inside_window])
    assert alive(outside.pid) and alive(app.pid)
