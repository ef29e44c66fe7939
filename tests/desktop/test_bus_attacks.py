"""Attacks across the line between a vault's bus and the host's, by a
process of the same user (the threat model of SECURITY.md), with real buses.

Each route is recorded: the ones that are closed must fail; the ones
nsshell cannot close (same-user processes outside may walk into a session,
NAMESPACE-FACTS 8) are asserted to work, so that SECURITY.md, which states
them, stays true (if one starts failing, update SECURITY.md)."""

import os
import subprocess

import pytest

from .buses import SessionBus, need
from .test_autolock import set_registry
from .test_bus_private import start_session

pytestmark = pytest.mark.namespaces

GET_ID = "--dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId"


@pytest.fixture
def host(world):
    need("dbus-send")
    bus = SessionBus(str(world.root), screensaver=False, socket=str(world.runtime / "bus"))
    world.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
    world.create("taxes")
    set_registry(world, "taxes", private_tmp="false")  # the desktop case: the runtime dir is not under /tmp
    world.bus = bus
    world.host_id = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")[0]
    # An ordinary outside process of the user, with the host's bus in its environment.
    world.outsider = subprocess.Popen(["sleep", "600"], env=world.env)
    try:
        yield world
    finally:
        world.outsider.kill()
        world.outsider.wait()
        try:
            world.lock_all()
        finally:
            bus.stop()


def try_bus(world, address):
    """From inside the vault: GetId of the bus at address, or None."""
    result = world.inside("taxes", f"dbus-send --bus='{address}' --print-reply {GET_ID}", check=False)
    return result.stdout.split('"')[1] if result.returncode == 0 else None


def test_a_session_tries_the_hosts_bus_by_every_route(host):
    world = host
    outsider = world.outsider.pid
    # The address as everyone knows it, and the usual path: covered inside.
    assert try_bus(world, world.bus.address) is None
    assert try_bus(world, f"unix:path={world.runtime}/bus") is None
    # An outside process's environment and root directory: a process in the
    # vault's user namespace may not ptrace-read one outside it (the kernel's
    # capability check wants CAP_SYS_PTRACE over the outer namespace), so
    # both are refused even though the uid is the same.
    for route in ("environ", "root/"):
        result = world.inside("taxes", f"cat /proc/{outsider}/{route} >/dev/null", check=False)
        assert result.returncode != 0 and "Permission denied" in result.stderr, (route, result.stderr)
    assert try_bus(world, f"unix:path=/proc/{outsider}/root{world.runtime}/bus") is None


def test_an_outside_process_tries_the_vaults_bus(host):
    world = host
    session = start_session(world)
    try:
        vault_id = world.inside("taxes", f"dbus-send --session --print-reply {GET_ID}").stdout.split('"')[1]
        # The address, read from a session's environment (`nsshell run`
        # exec'd the session's command with it).
        pid = session.pid
        environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        address = [e for e in environ if e.startswith(b"DBUS_SESSION_BUS_ADDRESS=")]
        assert address == [f"DBUS_SESSION_BUS_ADDRESS=unix:path={world.runtime}/nsshell/taxes.bus/bus".encode()]
        outside = subprocess.run(["dbus-send", f"--bus={address[0].split(b'=', 1)[1].decode()}", "--print-reply",
                                  *GET_ID.split()], capture_output=True, text=True, env=world.env)
        assert outside.returncode != 0 and "No such file" in outside.stderr, outside.stderr
        # Through a session's root directory: reachable, as the vault's files
        # are (NAMESPACE-FACTS 8; SECURITY.md).
        through_root = f"unix:path=/proc/{pid}/root{world.runtime}/nsshell/taxes.bus/bus"
        outside = subprocess.run(["dbus-send", f"--bus={through_root}", "--print-reply", *GET_ID.split()],
                                 capture_output=True, text=True, env=world.env)
        assert outside.returncode == 0 and vault_id in outside.stdout
    finally:
        session.kill()
        session.wait()
    # With no session, no process can be walked into: the bus is stopped.
    world.wait_until(lambda: world.state("taxes")["state"] == "locked", 60, "the vault to lock")


@pytest.mark.parametrize("offline", [False, True])
def test_an_abstract_socket_host_bus_is_cut_only_by_offline(host, offline):
    """unix:abstract= (what unix:tmpdir= gives) has no file to cover: it lives
    in the network namespace.  Reachable from inside unless offline = true."""
    world = host
    name = f"nsshell-test-{world.root.name}"
    read, write = os.pipe()
    daemon = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nopidfile", f"--address=unix:abstract={name}",
                               f"--print-address={write}"], pass_fds=[write], stderr=subprocess.DEVNULL)
    try:
        os.close(write)
        address = os.read(read, 4096).decode().strip()
        assert address.startswith(f"unix:abstract={name}")
        if offline:
            set_registry(world, "taxes", offline="true")
        reached = try_bus(world, f"unix:abstract={name}")
        assert (reached is None) == offline
    finally:
        daemon.kill()
        daemon.wait()
