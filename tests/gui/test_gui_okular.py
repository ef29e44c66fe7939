"""okular in a vault (issue 11, GUI-FACTS 3, 13), with an okular running
outside: the vault's PDF opens in a window inside, also with `--unique`
(which, on the host's bus, asked the outside instance and hung); quitting
locks the vault; okular's recent files, per-document data and KDE's
activity database stay in the vault."""

import secrets

import pytest
from context.scan import scan

from .apps import Inside, alive, mount_ns, session_mount_ns, wait_locked, write_pdf_inside
from .pdf import write_pdf
from .screen import wait_for

pytestmark = pytest.mark.namespaces


def test_okular_opens_inside_and_leaves_nothing_on_the_host(world, desktop, tmp_path):
    token = secrets.token_hex(4)
    canary = f"cnry{token}page"
    mountpoint = world.mountpoint("taxes")
    pdf = mountpoint / f"pdf{token}.pdf"
    write_pdf_inside(world, pdf, f"vault page {canary}", tmp_path)
    host_pdf = world.home / f"host{token}.pdf"
    write_pdf(host_pdf, "host page")
    outside = desktop.start(["okular", "--unique", str(host_pdf)])
    outside_window = desktop.wait_window(f"host{token}")

    for argv in (["okular", str(pdf)], ["okular", "--unique", str(pdf)]):
        viewer = Inside(world, desktop, *argv)
        window = desktop.wait_window(f"pdf{token}")
        owner = desktop.window_pid(window)
        assert owner == viewer.pid, (argv, owner, viewer.pid, outside.pid)
        assert mount_ns(owner) == session_mount_ns(world) != mount_ns(outside.pid)
        assert desktop.windows(f"host{token}") == [outside_window] and alive(outside.pid)
        desktop.key(window, "ctrl+q")
        wait_for(lambda: not alive(viewer.pid), "okular inside to end", 180)
        wait_locked(world)  # KDE's services on the vault's bus did not hold it

    docdata = mountpoint / ".nsshell" / "home" / ".local" / "share" / "okular" / "docdata"
    listed = world.run("run", "taxes", "--passfile", world.passfile, "--", "ls", str(docdata), check=True).stdout
    assert f"pdf{token}.pdf" in listed
    hits = scan([world.home], [canary, f"pdf{token}"], skip=[world.cipher_dir("taxes")])
    assert hits == [], hits
    assert not any(mountpoint.iterdir())
