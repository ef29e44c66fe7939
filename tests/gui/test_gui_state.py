"""GUI state stays in the vault, the host's settings stay readable (issue
11, GUI-FACTS 9-13).  Real mousepad and evince under Xvfb, with a desktop
session bus outside that runs the host's dconf-service.

The programs inside talk to the vault's own session bus (dbus = "vault",
the default), which starts dconf-service inside with the vault's GUI-state
environment (nsshell.sessionbus.extra_environment)."""

import secrets
import subprocess

import pytest
from context.scan import scan

from .apps import Inside, alive, wait_locked, write_inside
from .pdf import write_pdf
from .screen import wait_for

pytestmark = pytest.mark.namespaces

SETTING = ("org.xfce.mousepad.preferences.view", "tab-width")


def _gsettings(world, *args, env=None):
    return subprocess.run(["gsettings", *args], env={**world.env, **(env or {})}, capture_output=True, text=True,
                          check=True, timeout=120).stdout.strip()


def _read_inside(world, path):
    result = world.run("run", "taxes", "--", "cat", str(path))
    return result.stdout if result.returncode == 0 else ""


def test_mousepad_and_evince_state_stays_in_the_vault(world, desktop, tmp_path):
    token = secrets.token_hex(4)
    canary = f"cnry{token}typed"
    mountpoint = world.mountpoint("taxes")
    doc = mountpoint / f"doc{token}.txt"
    pdf = mountpoint / f"pdf{token}.pdf"
    vault_home = mountpoint / ".nsshell" / "home"
    # The host's desktop: a setting saved outside through the host's dconf-service.
    _gsettings(world, "set", *SETTING, "5")
    world.open("taxes")
    write_inside(world, doc, "first line\n")
    write_pdf(tmp_path / "p.pdf", f"page {canary}")  # /tmp outside: the vault's /tmp is its own
    world.run("run", "taxes", "--", "sh", "-c", 'cat > "$1"', "sh", pdf, input=(tmp_path / "p.pdf").read_text(),
              check=True)
    (tmp_path / "p.pdf").unlink()

    # The host's setting is read inside; one changed inside stays inside.
    inside = ["run", "taxes", "--", "gsettings"]
    assert world.run(*inside, "get", *SETTING, check=True).stdout.strip() == "uint32 5"
    world.run(*inside, "set", *SETTING, "3", check=True)
    assert world.run(*inside, "get", *SETTING, check=True).stdout.strip() == "uint32 3"
    assert _gsettings(world, "get", *SETTING) == "uint32 5"

    # mousepad: type, save, look at the recent files (the open dialog),
    # type again and let the autosave write it; save and quit.
    app = Inside(world, desktop, "mousepad", str(doc))
    window = desktop.wait_window(f"doc{token}")
    assert desktop.window_pid(window) == app.pid
    desktop.key(window, "ctrl+End")
    desktop.type(window, f"saved {canary}")
    desktop.key(window, "ctrl+s")
    wait_for(lambda: canary in _read_inside(world, doc), "the save to reach the vault's file", 180)
    desktop.key(window, "ctrl+o")
    dialog = desktop.wait_window("Open")
    desktop.key(dialog, "Escape")
    desktop.type(window, f" unsaved {canary}")
    autosave = vault_home / ".local" / "share" / "Mousepad" / "autosave-0"
    wait_for(lambda: f"unsaved {canary}" in _read_inside(world, autosave), "mousepad's autosave, in the vault", 300)
    desktop.key(window, "ctrl+s")
    wait_for(lambda: f"unsaved {canary}" in _read_inside(world, doc), "the second save", 180)
    desktop.key(window, "ctrl+q")
    wait_for(lambda: not alive(app.pid), "mousepad inside to end", 180)
    recent = vault_home / ".local" / "share" / "recently-used.xbel"
    assert f"doc{token}.txt" in _read_inside(world, recent)

    # evince: open the PDF, close it, and look at the recent view, which
    # draws a thumbnail of the page.
    viewer = Inside(world, desktop, "evince", str(pdf))
    window = desktop.wait_window(f"pdf{token}")
    assert desktop.window_pid(window) == viewer.pid
    desktop.key(window, "ctrl+w")
    wait_for(lambda: not alive(viewer.pid), "evince inside to end", 180)
    wait_for(lambda: f"pdf{token}.pdf" in _read_inside(world, recent), "evince's recent entry, in the vault", 180)
    recent_view = Inside(world, desktop, "evince")
    wait_for(lambda: world.run("run", "taxes", "--", "sh", "-c", f"grep -rl pdf{token} {vault_home}/.cache/thumbnails")
             .returncode == 0, "the thumbnail, in the vault", 300)
    recent_view.proc.terminate()

    world.run("lock", "taxes", "--force", check=True)
    wait_locked(world)
    hits = scan([world.home], [canary, f"doc{token}", f"pdf{token}"], skip=[world.cipher_dir("taxes")])
    assert hits == [], hits
    assert not any(mountpoint.iterdir())
    assert _gsettings(world, "get", *SETTING) == "uint32 5"
