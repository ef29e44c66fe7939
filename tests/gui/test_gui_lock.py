"""Locking a vault while GUI programs and the services its bus started run
inside (issue 11): everything ends, and the vault locks."""

import secrets

import pytest

from .apps import Inside, alive, process_name, vault_processes, wait_locked, write_pdf_inside
from .screen import wait_for

pytestmark = pytest.mark.namespaces


def test_lock_ends_gui_programs_and_bus_services(world, desktop, tmp_path):
    token = secrets.token_hex(4)
    mountpoint = world.mountpoint("taxes")
    pdf = mountpoint / f"pdf{token}.pdf"
    world.open("taxes")
    write_pdf_inside(world, pdf, "page", tmp_path)
    editor = Inside(world, desktop, "mousepad", str(mountpoint / f"doc{token}.txt"))
    viewer = Inside(world, desktop, "evince", str(pdf))
    desktop.wait_window(f"doc{token}")
    desktop.wait_window(f"pdf{token}")
    # dconf-service and evince's daemon, started on the vault's bus.
    wait_for(lambda: {"dconf-service", "evinced"} <= {process_name(p) for p in vault_processes(mountpoint)},
             "dconf-service and evinced inside", 180)
    running = vault_processes(mountpoint)
    assert editor.pid in running and viewer.pid in running

    world.run("lock", "taxes", "--force", check=True)
    wait_locked(world)
    wait_for(lambda: not any(alive(p) for p in running), "every process of the vault to end", 180)
    assert vault_processes(mountpoint) == []
    assert not any(mountpoint.iterdir())
