"""Locking always finishes, and the control socket can neither stall nor vanish
(issue 12, items 1 and 7).

Every test ends the same way: `list` says locked, no holder or gocryptfs
process of the test's world is left, the runtime files are gone and the bare
mountpoint is empty (reliability.assert_nothing_left).
"""

import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

from reliability import assert_nothing_left, gocryptfs_pids, keeper_status, record, wait_for

pytestmark = pytest.mark.namespaces


def _session(world, *command):
    """`nsshell run taxes -- COMMAND` in the background (unlocking if it must)."""
    return subprocess.Popen(
        [world.exe, "run", "taxes", "--passfile", str(world.passfile), "--", *command],
        env=world.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _enter(world):
    """`nsshell enter taxes` with sh reading an open pipe: an idle interactive session."""
    return subprocess.Popen(
        [world.exe, "enter", "taxes", "--passfile", str(world.passfile)],
        env={**world.env, "SHELL": "/bin/sh"}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _sessions(world):
    status = keeper_status(world, "taxes")
    return 0 if status is None else len(status["sessions"])


def _assert_locked_and_gone(world):
    left = assert_nothing_left(world, "taxes", timeout=30)
    assert world.state("taxes")["state"] == "locked"
    return left


def _force_lock(world):
    started = time.monotonic()
    result = world.run("lock", "taxes", "--force", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "locked" in result.stderr, result.stderr
    assert_nothing_left(world, "taxes", timeout=30)
    return time.monotonic() - started


# --- item 1: lock --force always ends in "locked, every holder process gone" ----------------


@pytest.mark.parametrize("opened_by", ["run", "enter", "open", "failed"])
def test_force_lock_always_locks_and_ends_every_holder_process(world, opened_by):
    """The vault was unlocked by `run` (linger 0, never opened), by `enter`,
    by `open`, or its gocryptfs was killed (a failed vault).  Ending the last
    session used to re-enter the lock from inside itself, and the keeper
    waited forever with no socket and the key still in gocryptfs."""
    world.create("taxes")
    if opened_by == "open":
        world.open("taxes")
    session = _enter(world) if opened_by == "enter" else _session(world, "sleep", "600")
    wait_for(lambda: _sessions(world) >= 1, timeout=120, what="the session to register")
    if opened_by == "failed":
        for pid in gocryptfs_pids(world):
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: keeper_status(world, "taxes")["state"] == "failed", what="the vault to fail")
    seconds = _force_lock(world)
    assert session.wait(30) != 0  # hung up, then killed if it had to be
    _assert_locked_and_gone(world)
    record("force-lock", opened_by=opened_by, seconds=round(seconds, 2))


def test_force_lock_from_another_terminal_hangs_up_a_plain_enter_and_locks(world):
    """A real bash in `nsshell enter` (no `open`), through a pty: the shell is
    hung up AND the vault locks."""
    from shells.driver import Shell

    world.create("taxes")
    (world.home / ".bashrc").write_text("PS1='P${NSSHELL_VAULT-out}>'\n")
    env = {**world.env, "SHELL": "/bin/bash", "TERM": "xterm"}
    shell = Shell([world.exe, "enter", "taxes"], env, world.home)
    try:
        shell.expect(r"Passphrase for taxes: ")
        from conftest import PASSPHRASE

        shell.send(PASSPHRASE + "\r")
        shell.expect(r"Ptaxes>")
        shell.run("echo in-vault:$NSSHELL_VAULT", r"in-vault:taxes")
        _force_lock(world)
        # The shell's terminal says why, not only bash's "Hangup".
        shell.expect(r"nsshell: vault 'taxes' locked: 'nsshell lock --force' was run")
        shell.wait_exit()  # EOF on the pty: the shell was hung up
    finally:
        shell.close()
    _assert_locked_and_gone(world)
    # Whoever ran the lock knows why: no note is left for the next unlock.
    assert not (world.runtime / "nsshell" / "taxes.reason").exists()


def test_locking_twice_at_once_is_harmless(world):
    """Two `lock --force` racing on a vault unlocked by `run`: both end well."""
    world.create("taxes")
    session = _session(world, "sleep", "600")
    wait_for(lambda: _sessions(world) >= 1, timeout=120, what="the session to register")
    locks = [subprocess.Popen([world.exe, "lock", "taxes", "--force"], env=world.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(lock.wait(120), lock.stderr.read()) for lock in locks]
    for code, stderr in results:
        assert code == 0, stderr
    assert session.wait(30) != 0
    _assert_locked_and_gone(world)


def test_an_unexpected_error_in_the_keeper_is_logged_and_locks_the_vault(world):
    """A bug in a request handler (injected: STATUS raises) used to escape the
    serving loop: the keeper died with a traceback while its sessions ran on.
    Now it is logged to the vault's log, which is kept, and the vault locks."""
    from pathlib import Path

    faults = str(Path(__file__).resolve().parent.parent / "faultinject" / "nsshell_faults.py")
    world.create("taxes")
    world.run("open", "taxes", "--passfile", world.passfile, check=True,
              env={"NSSHELL_TEST_FAULTINJECT": faults, "NSSHELL_TEST_FAULT": "keeper-bug"})
    session = _session(world, "sleep", "600")
    outside = os.readlink("/proc/self/ns/mnt")
    wait_for(lambda: os.readlink(f"/proc/{session.pid}/ns/mnt") != outside, timeout=60,
             what="the session to join (STATUS would set off the bug)")
    from reliability import raw_request

    assert raw_request(world, "taxes", "STATUS") is None  # dropped: the keeper is locking
    assert session.wait(30) != 0  # the session was ended, not left on a dead mount
    log = world.runtime / "nsshell" / "taxes.log"
    wait_for(lambda: not world.holder_pids(), what="every holder process to end")
    text = log.read_text()
    assert "unexpected error" in text and "injected keeper bug" in text and "locking the vault" in text, text
    log.unlink()
    _assert_locked_and_gone(world)


# --- item 7: a slow client cannot stall the keeper ---------------------------------------

SLOW_CLIENT = r"""
import socket, sys, time
path = sys.argv[1]
# One byte every 1.9 s, forever; when the keeper drops us, connect again.
while True:
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        print("connected", flush=True)
        while True:
            s.sendall(b"J")
            time.sleep(1.9)
    except OSError:
        time.sleep(0.1)
"""


def test_a_slow_client_cannot_stall_the_keeper(world):
    world.create("taxes")
    world.open("taxes")
    sock = str(world.runtime / "nsshell" / "taxes.sock")
    slow = [
        subprocess.Popen([sys.executable, "-c", SLOW_CLIENT, sock], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    try:
        for client in slow:
            assert client.stdout.readline() == "connected\n"
        took = []
        for _ in range(3):
            started = time.monotonic()
            result = world.run("run", "taxes", "--", "true", timeout=90)
            took.append(time.monotonic() - started)
            assert result.returncode == 0, result.stderr
        # A session runs: a plain lock must refuse (not say "was not open", not
        # stop the holder under it); a forced one locks.
        session = _session(world, "sleep", "600")
        wait_for(lambda: _sessions(world) >= 1, timeout=60, what="the session to register")
        refused = world.run("lock", "taxes", timeout=90)
        assert refused.returncode == 6, refused.stderr
        assert "session" in refused.stderr and "was not open" not in refused.stderr
        assert session.poll() is None and world.state("taxes")["state"] == "open"
        assert all(client.poll() is None for client in slow)  # still at it
        _force_lock(world)
        assert session.wait(30) != 0
    finally:
        for client in slow:
            client.kill()
            client.wait()
    _assert_locked_and_gone(world)
    record("slow-clients", clients=len(slow), run_seconds_median=round(statistics.median(took), 2))


# --- item 7: the socket file deleted or replaced -----------------------------------------


def _break_socket(path, how):
    os.unlink(path)
    if how == "fifo":
        os.mkfifo(path, 0o600)
    elif how == "file":
        with open(path, "w") as f:
            f.write("not a socket\n")


@pytest.mark.parametrize("how", ["deleted", "fifo", "file"])
def test_a_deleted_or_replaced_socket_comes_back_and_lock_still_works(world, how):
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    world.run("run", "taxes", "--", "sh", "-c", f"echo kept > {mp}/kept.txt", check=True)
    sock = world.runtime / "nsshell" / "taxes.sock"

    # `run` works again once the keeper has re-created its socket.
    _break_socket(sock, how)
    started = time.monotonic()
    result = world.run("run", "taxes", "--", "cat", f"{mp}/kept.txt", timeout=90)
    run_seconds = time.monotonic() - started
    assert result.returncode == 0 and result.stdout == "kept\n", result.stderr

    # With a session running and the socket gone: a plain lock refuses, and
    # the session and the vault are untouched.
    session = _session(world, "sleep", "600")
    wait_for(lambda: _sessions(world) >= 1, timeout=60, what="the session to register")
    _break_socket(sock, how)
    refused = world.run("lock", "taxes", timeout=90)
    assert refused.returncode == 6, refused.stderr
    assert "was not open" not in refused.stderr
    assert session.poll() is None and world.state("taxes")["state"] == "open"

    # Gone again: lock --force reaches the keeper all the same.
    _break_socket(sock, how)
    lock_seconds = _force_lock(world)
    assert session.wait(30) != 0
    _assert_locked_and_gone(world)
    record("socket-broken", how=how, run_seconds=round(run_seconds, 2), force_lock_seconds=round(lock_seconds, 2))


def test_a_socket_path_the_keeper_cannot_take_back_still_force_locks(world):
    """A directory in the socket's place: the keeper cannot re-create its
    socket there, so lock --force signals it (LOCK_SIGNAL) instead."""
    world.create("taxes")
    world.open("taxes")
    session = _session(world, "sleep", "600")
    wait_for(lambda: _sessions(world) >= 1, timeout=60, what="the session to register")
    sock = world.runtime / "nsshell" / "taxes.sock"
    os.unlink(sock)
    sock.mkdir()
    refused = world.run("lock", "taxes", timeout=90)
    assert refused.returncode == 1, refused.stderr
    assert "--force" in refused.stderr and "try again in a moment" not in refused.stderr, refused.stderr
    assert session.poll() is None
    started = time.monotonic()
    result = world.run("lock", "taxes", "--force", timeout=120)
    assert result.returncode == 0 and "locked" in result.stderr, result.stderr
    assert session.wait(30) != 0
    sock.rmdir()  # ours to clean up: nsshell never removes a directory it did not make
    _assert_locked_and_gone(world)
    record("socket-blocked", force_lock_seconds=round(time.monotonic() - started, 2))


def test_a_deleted_socket_without_sessions_locks_with_a_plain_lock(world):
    world.create("taxes")
    world.open("taxes")
    os.unlink(world.runtime / "nsshell" / "taxes.sock")
    result = world.run("lock", "taxes", timeout=90)
    assert result.returncode == 0 and "locked" in result.stderr, result.stderr
    _assert_locked_and_gone(world)


# --- item 7: a timeout is never "not open" -----------------------------------------------


def test_a_holder_that_does_not_answer_is_not_reported_as_locked():
    """client.request used to return None (= "not open") on a timeout."""
    from nsshell import client
    from nsshell.errors import NsshellError

    base = tempfile.mkdtemp(prefix="nst", dir="/tmp")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(os.path.join(base, "mute.sock"))
        listener.listen(1)  # accepts (in the kernel) and never answers
        with pytest.raises(NsshellError) as raised:
            client.request("mute", "LOCK", base)
        assert "did not answer" in str(raised.value)
    finally:
        listener.close()
        os.unlink(os.path.join(base, "mute.sock"))
        os.rmdir(base)
