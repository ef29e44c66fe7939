"""Vaults lock by themselves on suspend, screen lock and logout, announced on
real D-Bus daemons (a private system bus with python-dbusmock's logind, a
private session bus with a mock ScreenSaver), and after idle_lock without file
activity.  Each trigger is tried on an `open`ed vault and on a vault in use by
a real bash through a pty, whose history must end up inside the vault.

The time from the signal to "locked" is printed (run with -s to see it).
"""

import os
import re
import time

import pytest

from shells.test_interactive import bash_shell

from .buses import SESSION_ID, SessionBus, SystemBus, log_of, need, wait_for, wait_watching

pytestmark = pytest.mark.namespaces

TRIGGERS = {
    # name: (bus the holder must watch first, how to fire it, what the user is told)
    "suspend": ("system", lambda sysbus, sesbus: sysbus.prepare_for_sleep(True), "the system went to sleep"),
    "logind-lock": ("system", lambda sysbus, sesbus: sysbus.lock_session(), "the screen was locked"),
    "screensaver": ("session", lambda sysbus, sesbus: sesbus.screensaver_active(True), "the screen was locked"),
    "logout": ("system", lambda sysbus, sesbus: sysbus.remove_session(), "the desktop session ended"),
}


@pytest.fixture
def desktop(world):
    """The world, with a system bus (mock logind) and a session bus (mock screen saver)."""
    system, session = SystemBus(str(world.root)), None
    try:
        session = SessionBus(str(world.root))
        world.env.update(
            DBUS_SYSTEM_BUS_ADDRESS=system.address,
            DBUS_SESSION_BUS_ADDRESS=session.address,
            XDG_SESSION_ID=SESSION_ID,
        )
        world.system_bus, world.session_bus = system, session
        yield world
    finally:
        try:
            world.lock_all()
        finally:
            system.stop()
            if session is not None:
                session.stop()


def socket_of(world, name="taxes"):
    return world.runtime / "nsshell" / f"{name}.sock"


def wait_locked(world, name="taxes", timeout=60.0, start=None):
    """Seconds from start (default: now) until the socket is gone (no new
    session can join), and until every holder and gocryptfs process of the
    world has exited (unmounted).  Polled every 20 ms."""
    start = time.monotonic() if start is None else start
    log = log_of(world, name)
    wait_for(lambda: not socket_of(world, name).exists(), f"{name} to stop serving; its log:\n{log}", timeout)
    refused = time.monotonic() - start
    wait_for(lambda: not world.holder_pids(), f"{name}'s holder and gocryptfs to exit", timeout)
    return refused, time.monotonic() - start


def report(label, refused, gone):
    print(f"\nFIGURE autolock {label}: socket gone {refused * 1000:.0f} ms, holder and gocryptfs gone {gone * 1000:.0f} ms")


def set_registry(world, name, **fields):
    """Add keys to a vault's table in the registry (as a user would edit it)."""
    registry = world.home / ".config" / "nsshell" / "vaults.toml"
    text = registry.read_text()
    lines = "".join(f"{key} = {value}\n" for key, value in fields.items())
    registry.write_text(text.replace(f"[vaults.{name}]\n", f"[vaults.{name}]\n{lines}", 1))


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
def test_trigger_locks_an_open_vault(desktop, trigger):
    world = desktop
    bus, fire, why = TRIGGERS[trigger]
    world.create("taxes")
    world.inside("taxes", 'echo kept > "$NSSHELL_MOUNTPOINT/file"')
    world.open("taxes")
    wait_watching(world, "taxes", bus)
    start = time.monotonic()
    fire(world.system_bus, world.session_bus)
    refused, gone = wait_locked(world, start=start)
    report(f"{trigger} (open vault)", refused, gone)
    assert world.state("taxes")["state"] == "locked"
    # The next command that opens it says why it was locked, once.
    again = world.inside("taxes", 'cat "$NSSHELL_MOUNTPOINT/file"')
    assert again.stdout == "kept\n"
    assert re.search(rf"vault 'taxes' was locked at \d\d:\d\d: {why}", again.stderr), again.stderr
    world.lock_all()
    third = world.inside("taxes", "true")
    assert "was locked" not in third.stderr, third.stderr


@pytest.mark.shells
@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
def test_trigger_hangs_up_a_shell_which_keeps_its_history_in_the_vault(desktop, trigger):
    world = desktop
    bus, fire, why = TRIGGERS[trigger]
    world.create("taxes")
    world.open("taxes")
    wait_watching(world, "taxes", bus)
    shell = bash_shell(world)
    try:
        shell.send("vault enter taxes\r")
        shell.expect(r"\[vault:taxes\] L2>")
        shell.run("echo typed-inside-$((6*7))", r"L2>")
        start = time.monotonic()
        fire(world.system_bus, world.session_bus)
        shell.expect(rf"nsshell: vault 'taxes' locked: {why}")
        refused, gone = wait_locked(world, start=start)
        report(f"{trigger} (bash session)", refused, gone)
        shell.expect(r"L1>")
        out = shell.run('echo "vault=${NSSHELL_VAULT-none}"', r"L1>")
        assert "vault=none" in out, out
        shell.send("exit\r")
        shell.wait_exit()
    finally:
        shell.close()
    history = world.inside("taxes", 'cat "$NSSHELL_MOUNTPOINT/.nsshell/bash_history"').stdout
    assert "echo typed-inside-$((6*7))" in history, history
    assert "typed-inside" not in (world.home / ".bash_history").read_text()


def test_only_the_chosen_triggers_and_only_our_session_count(desktop):
    """lock_on = ["logout"]: suspend, a screen lock, another session's lock and
    end, and PrepareForSleep(false) all pass; the end of our session locks.  The
    signals are sent in that order on one bus, and the holder reads them in
    order, so the recorded reason proves the earlier ones were ignored."""
    world = desktop
    world.create("taxes")
    set_registry(world, "taxes", lock_on='["logout"]')
    world.open("taxes")
    wait_watching(world, "taxes", "system")
    system = world.system_bus
    system.call("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.DBus.Mock", "AddSession",
                "ssusb", ("c8", "seat0", os.getuid(), "tester", True))
    system.prepare_for_sleep(False)
    system.prepare_for_sleep(True)
    system.lock_session()
    system.lock_session("c8")
    system.remove_session("c8")
    world.session_bus.screensaver_active(True)
    system.remove_session()
    wait_locked(world)
    again = world.inside("taxes", "true")
    assert "the desktop session ended" in again.stderr, again.stderr
    assert "watching the session bus" not in log_of(world, "taxes")


def test_other_sessions_and_waking_up_do_not_lock(desktop):
    """With every trigger on: another session's lock and end, and
    PrepareForSleep(false) (waking up) pass; then a suspend locks, and the
    recorded reason is the suspend."""
    world = desktop
    world.create("taxes")
    world.open("taxes")
    wait_watching(world, "taxes", "system")
    system = world.system_bus
    system.call("org.freedesktop.login1", "/org/freedesktop/login1", "org.freedesktop.DBus.Mock", "AddSession",
                "ssusb", ("c8", "seat0", os.getuid(), "tester", True))
    system.lock_session("c8")
    system.remove_session("c8")
    system.prepare_for_sleep(False)
    world.session_bus.screensaver_active(False)
    system.prepare_for_sleep(True)
    wait_locked(world)
    again = world.inside("taxes", "true")
    assert "the system went to sleep" in again.stderr, again.stderr


def test_lock_on_empty_turns_it_off(desktop):
    world = desktop
    world.create("taxes")
    world.create("other")
    set_registry(world, "taxes", lock_on="[]")
    world.open("taxes")
    world.open("other")
    wait_watching(world, "other", "system")
    world.system_bus.prepare_for_sleep(True)
    world.session_bus.screensaver_active(True)
    wait_for(lambda: not socket_of(world, "other").exists(), "the vault with lock_on by default to lock")
    assert socket_of(world, "taxes").exists()
    assert world.state("taxes")["state"] == "open"
    assert "watching" not in log_of(world, "taxes")
    assert "locks on:   nothing (lock_on = [])" in world.run("status", "taxes").stdout
    assert "locks on:   suspend, screen-lock, logout" in world.run("status", "other").stdout


def test_without_any_bus_nothing_breaks(world):
    """No system bus at its address, no session bus: vaults open and run as
    ever, the log says why they will not lock on desktop events, and doctor
    says auto-lock is unavailable."""
    world.env.update(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={world.root}/no-such-bus")
    world.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    world.create("taxes")
    world.open("taxes")
    assert world.inside("taxes", "echo fine").stdout == "fine\n"
    wait_for(lambda: "unavailable (no system bus)" in log_of(world, "taxes"), "the holder to log that there is no bus")
    assert world.state("taxes")["state"] == "open"
    doctor = world.run("doctor", "--json")
    import json

    checks = {c["title"]: c for c in json.loads(doctor.stdout)}
    assert checks["auto-lock"]["status"] == "warn", checks["auto-lock"]
    assert "auto-lock is unavailable" in checks["auto-lock"]["detail"], checks["auto-lock"]


def test_doctor_sees_logind_and_the_session_bus(desktop):
    import json

    checks = {c["title"]: c for c in json.loads(desktop.run("doctor", "--json").stdout)}
    assert checks["auto-lock"]["status"] == "ok", checks["auto-lock"]
    assert "logind" in checks["auto-lock"]["detail"]


@pytest.mark.parametrize("backend", ["as-installed", "plain"])
def test_idle_lock_waits_for_file_activity_to_stop(world, backend):
    """idle_lock = "4s": a session that keeps using files for three times that
    keeps the vault open; once nothing touches it, the vault locks and says why.

    as-installed: the gocryptfs nsshell picks, which in CI is the hardened,
    non-dumpable copy whose /proc/PID/io nobody may read; plain: the one on
    PATH, which is dumpable."""
    need("sh")
    if backend == "plain":
        world.env["NSSHELL_GOCRYPTFS"] = need("gocryptfs")
    world.env.update(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={world.root}/no-such-bus")
    world.create("taxes")
    set_registry(world, "taxes", idle_lock='"4s"')
    world.open("taxes")
    busy = world.inside(
        "taxes",
        'i=0; while [ $i -lt 12 ]; do echo $i >> "$NSSHELL_MOUNTPOINT/log"; ls "$NSSHELL_MOUNTPOINT" >/dev/null; '
        "sleep 1; i=$((i+1)); done; echo done",
        check=False,
    )
    assert busy.returncode == 0 and busy.stdout.endswith("done\n"), (busy.returncode, busy.stdout, busy.stderr)
    last_activity = time.monotonic()
    log_text = log_of(world, "taxes")  # the log goes when the vault locks
    refused, gone = wait_locked(world, timeout=120)
    print(f"\nFIGURE autolock idle_lock=4s ({backend}): locked {time.monotonic() - last_activity:.1f} s after the last file activity")
    assert "by fuse-requests" in log_text, log_text  # not /proc, which a hardened gocryptfs hides
    again = world.inside("taxes", 'wc -l < "$NSSHELL_MOUNTPOINT/log"')
    assert again.stdout.strip() == "12"
    assert "nothing used it for 4s" in again.stderr, again.stderr


@pytest.mark.parametrize("settings", [{}, {"lock_on": "[]", "idle_lock": '"1h"'}, {"lock_on": "[]"}])
def test_killing_the_supervisor_locks_a_vault_that_asked_to_lock_by_itself(world, settings):
    """The auto-lock watchers are threads of the supervisor, which a process of
    the user may kill.  A vault with any lock_on trigger (the default) or an
    idle_lock then locks at once, the way 'lock --force' does: its session gets
    SIGHUP (and writes into the vault before it goes), nothing is left running
    or mounted, and the next unlock says why.  With lock_on = [] and no
    idle_lock there was nothing to watch, and the vault stays open."""
    import signal
    import subprocess

    from reliability import assert_nothing_left, state_record

    world.env.update(DBUS_SYSTEM_BUS_ADDRESS=f"unix:path={world.root}/no-such-bus")
    world.create("taxes")
    if settings:
        set_registry(world, "taxes", **settings)
    world.open("taxes")
    session = subprocess.Popen(
        [world.exe, "run", "taxes", "--", "sh", "-c",
         'trap \'echo hung-up > "$NSSHELL_MOUNTPOINT/hup"; exit 0\' HUP; echo ready; while :; do sleep 1; done'],
        env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert session.stdout.readline() == "ready\n"
        supervisor = state_record(world, "taxes")["supervisor"][0]
        os.kill(supervisor, signal.SIGKILL)
        if settings == {"lock_on": "[]"}:
            wait_for(lambda: supervisor not in world.holder_pids(), "the supervisor to be gone")
            assert session.poll() is None
            assert world.state("taxes")["state"] == "open"
            return
        session.wait(timeout=60)
        assert session.returncode == 0, session.stderr.read()
        wait_for(lambda: not world.holder_pids() and world.runtime_files() == ["taxes.reason"],
                 f"the vault to lock; left: {world.holder_pids()} {world.runtime_files()}", timeout=60)
        again = world.inside("taxes", 'cat "$NSSHELL_MOUNTPOINT/hup"')
        assert again.stdout == "hung-up\n"
        assert "its holder's supervisor was killed" in again.stderr, again.stderr
        world.lock_all()
        assert_nothing_left(world, "taxes", timeout=30)
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        world.lock_all()
