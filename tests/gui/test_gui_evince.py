"""evince in a vault (issue 11, GUI-FACTS 2, 9, 12): with an evince running
outside, and even after an outside evince already tried the vault's path
(which made evince's daemon on the host bus hand the document to it), the
vault's PDF opens in a window inside; closing the last window locks the vault (evince's daemon,
started on the vault's bus, does not keep it open); nothing reaches the
host's HOME."""

import secrets

import pytest
from context.scan import scan

from .apps import Inside, alive, mount_ns, session_mount_ns, wait_locked, write_pdf_inside
from .pdf import write_pdf
from .screen import wait_for

pytestmark = pytest.mark.namespaces


def test_evince_opens_inside_and_leaves_nothing_on_the_host(world, desktop, tmp_path):
    token = secrets.token_hex(4)
    canary = f"cnry{token}page"
    mountpoint = world.mountpoint("taxes")
    pdf = mountpoint / f"pdf{token}.pdf"
    write_pdf_inside(world, pdf, f"vault page {canary}", tmp_path)
    host_pdf = world.home / f"host{token}.pdf"
    write_pdf(host_pdf, "host page")
    outside = desktop.start(["evince", str(host_pdf)])
    outside_window = desktop.wait_window(f"host{token}")
    # An outside evince asked for the vault's path (it cannot read it).
    tried = desktop.start(["evince", str(pdf)])
    tried_windows = desktop.windows(f"pdf{token}|Evince|evince")
    wait_for(lambda: tried.poll() is not None or desktop.windows("."), "the outside evince to try", 120)

    viewer = Inside(world, desktop, "evince", str(pdf))
    window = desktop.wait_window(f"pdf{token}", exclude=tried_windows + desktop.windows(f"host{token}"))
    owner = desktop.window_pid(window)
    assert owner == viewer.pid, (owner, viewer.pid, outside.pid, tried.pid)
    assert mount_ns(owner) == session_mount_ns(world) != mount_ns(outside.pid)
    assert desktop.windows(f"host{token}") == [outside_window] and alive(outside.pid)

    # Close the document: the last session ends.  (That evince's recent
    # entry and thumbnail land in the vault is shown on a held vault, by
    # test_gui_state.py: here the vault locks as evince ends, and polling
    # for them meant unlocking again and again, which made this test flaky.)
    desktop.key(window, "ctrl+w")
    wait_for(lambda: not alive(viewer.pid), "evince inside to end", 180)
    wait_locked(world)  # no session left: the daemon on the vault's bus did not hold it

    assert desktop.windows(f"host{token}") == [outside_window] and alive(outside.pid)
    hits = scan([world.home], [canary, f"pdf{token}"], skip=[world.cipher_dir("taxes")])
    assert hits == [], hits
    assert not any(mountpoint.iterdir())
