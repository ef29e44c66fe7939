"""SIGKILL at the worst moment, and a full disk under the cipher dir.

After every fault: data fsynced before it is intact, `gocryptfs -fsck`
finds the cipher dir clean, and the next plain nsshell command recovers by
itself, leaving no processes, mounts or runtime files behind."""

import os
import signal
import subprocess
import sys
import time

import pytest

from reliability import assert_nothing_left, fsck, gocryptfs_pids, record, state_record, wait_for

pytestmark = pytest.mark.namespaces

# Inside the vault: write a.txt and fsync it, then append numbered lines to
# b.txt, fsyncing each and reporting its number only after the fsync.
WRITER = r"""
import os, sys
mp = sys.argv[1]
with open(os.path.join(mp, "a.txt"), "w") as f:
    f.write("fsynced before the fault\n" * 1000)
    f.flush(); os.fsync(f.fileno())
print("A", flush=True)
fd = os.open(os.path.join(mp, "b.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
n = 0
while True:
    n += 1
    os.write(fd, b"line %08d %s\n" % (n, b"x" * 4000))
    os.fsync(fd)
    print(n, flush=True)
"""


def _start_writer(world, mp):
    writer = subprocess.Popen(
        [world.exe, "run", "taxes", "--", sys.executable, "-c", WRITER, str(mp)],
        env=world.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
    )
    assert writer.stdout.readline() == "A\n"
    last = 0
    while last < 20:  # it is well into b.txt
        last = int(writer.stdout.readline())
    return writer


def _drain(writer):
    """Kill the writer (if still alive) and return the last line number it saw fsynced."""
    try:
        writer.kill()
    except ProcessLookupError:
        pass
    rest = writer.stdout.read()
    writer.wait()
    numbers = [int(x) for x in rest.split() if x.isdigit()]
    return numbers[-1] if numbers else None


def _check_data(world, mp, durable):
    """a.txt intact; b.txt holds every line up to the last one reported fsynced."""
    a = world.inside("taxes", f"cat {mp}/a.txt").stdout
    assert a == "fsynced before the fault\n" * 1000
    b = world.inside("taxes", f"cat {mp}/b.txt").stdout.splitlines()
    for i in range(durable):
        assert b[i].startswith(f"line {i + 1:08d} "), (i, b[i][:20])
    return len(b)


@pytest.mark.parametrize("victim", ["keeper", "supervisor", "backend", "session", "all-holder-processes"])
def test_sigkill_while_a_session_is_writing(world, victim):
    mp = world.create("taxes")
    world.open("taxes")
    writer = _start_writer(world, mp)
    state = state_record(world, "taxes")
    if victim == "session":
        targets = [writer.pid]
    elif victim == "all-holder-processes":
        targets = [state[r][0] for r in ("keeper", "supervisor", "backend")]
    else:
        targets = [state[victim][0]]
    for pid in targets:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)  # let the writer notice (or not); no assertion depends on it
    durable = _drain(writer)
    if durable is None:
        durable = 20
    # The next plain command recovers by itself (unlocking again if it must).
    lines = _check_data(world, mp, durable)
    world.run("lock", "taxes", "--force", check=True)
    left = assert_nothing_left(world, "taxes", timeout=30)
    code, output = fsck(world, "taxes")
    assert code == 0, output
    record("fault-sigkill", victim=victim, fsynced_lines=durable, lines_found=lines, fsck=code,
           leftovers=sum(len(v) for v in left.values()))


@pytest.mark.parametrize("moment", ["holder-started", "gocryptfs-started"])
def test_sigkill_of_the_client_in_the_middle_of_unlocking(world, moment):
    mp = world.create("taxes")
    world.inside("taxes", f"echo kept > {mp}/kept.txt && sync")
    assert_nothing_left(world, "taxes")
    client = subprocess.Popen(
        [world.exe, "open", "taxes", "--passfile", str(world.passfile)],
        env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    if moment == "holder-started":
        wait_for(lambda: world.holder_pids(), interval=0.001, what="the holder")
    else:
        wait_for(lambda: gocryptfs_pids(world), interval=0.005, what="gocryptfs")
    client.kill()
    client.wait()
    # Whatever state the unlock reached, the next plain command copes.
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "cat", f"{mp}/kept.txt")
    assert result.returncode == 0 and result.stdout == "kept\n", result.stderr
    world.run("lock", "taxes", "--force", check=True)
    left = assert_nothing_left(world, "taxes", timeout=60)
    code, output = fsck(world, "taxes")
    assert code == 0, output
    record("fault-sigkill", victim=f"client ({moment})", fsck=code, leftovers=sum(len(v) for v in left.values()))


def test_stale_records_pointing_at_strangers_are_never_signalled(world):
    """Every role of the state record, and the lock and log files, point at
    live unrelated processes of ours (same pid, different start time)."""
    import json
    import socket

    strangers = [subprocess.Popen(["sleep", "120"]) for _ in range(3)]
    try:
        mp = world.create("taxes")
        runtime = world.runtime / "nsshell"
        runtime.mkdir(mode=0o700, exist_ok=True)
        record_ = {role: [p.pid, 12345] for role, p in zip(("supervisor", "keeper", "backend"), strangers)}
        (runtime / "taxes.state").write_text(json.dumps(record_))
        (runtime / "taxes.lock").write_text("")
        (runtime / "taxes.log").write_text("old log\n")
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(runtime / "taxes.sock"))
        s.close()
        assert world.inside("taxes", f"echo ok > {mp}/x && cat {mp}/x").stdout == "ok\n"
        # Records with garbage in them are stale too, and harmless.
        for garbage in ('{"supervisor": "1", "keeper": [1], "backend": [-1, 0]}', "not json", '[1, 2]'):
            (runtime / "taxes.state").write_text(garbage)
            assert world.inside("taxes", "true").returncode == 0
        assert [p.poll() for p in strangers] == [None, None, None]
        assert_nothing_left(world, "taxes")
    finally:
        for p in strangers:
            p.kill()
            p.wait()


# --- a full disk under the cipher dir ------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(world):
    """A 4 MiB tmpfs that gocryptfs, running in the initial namespaces, can use.

    Unprivileged users cannot mount a tmpfs on the host.  They can in a user
    namespace of their own, and the host side reaches it through
    /proc/PID/root of a process in there (NAMESPACE-FACTS 8: the user owns
    that namespace).  So the cipher dir lives at /proc/PID/root/<dir>."""
    where = world.root / "tiny"
    where.mkdir()
    keeper = subprocess.Popen(
        ["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs -o size=4m tmpfs {where} && echo ready && exec sleep 900"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = keeper.stdout.readline()
    if line != "ready\n":
        keeper.kill()
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {keeper.stderr.read().strip()}")
    try:
        yield f"/proc/{keeper.pid}/root{where}"
    finally:
        world.lock_all()
        keeper.kill()
        keeper.wait()


def test_enospc_in_the_cipher_dir_is_a_clear_error_and_earlier_data_survives(world, tiny_tmpfs):
    cipher = f"{tiny_tmpfs}/cipher"
    world.run("create", "taxes", "--passfile", world.passfile, "--cipher-dir", cipher, check=True)
    mp = world.mountpoint("taxes")
    world.open("taxes")
    world.run("run", "taxes", "--", "sh", "-c", f"seq 1 20000 > {mp}/early.txt && sync", check=True)
    full = world.run("run", "taxes", "--", "sh", "-c", f"dd if=/dev/zero of={mp}/big bs=64k count=1000 conv=fsync")
    assert full.returncode != 0
    assert "No space left on device" in full.stderr, full.stderr
    # Earlier data is intact while the disk is full, and after space is freed.
    check = world.run("run", "taxes", "--", "sh", "-c", f"seq 1 20000 | cmp - {mp}/early.txt && echo same")
    assert check.stdout == "same\n", check.stderr
    world.run("run", "taxes", "--", "rm", f"{mp}/big", check=True)
    world.run("run", "taxes", "--", "sh", "-c", f"echo after > {mp}/after.txt && sync", check=True)
    world.run("lock", "taxes", check=True)
    assert_nothing_left(world, "taxes")
    code, output = fsck(world, "taxes", cipher_dir=cipher)
    assert code == 0, output
    assert world.inside("taxes", f"cat {mp}/after.txt && wc -l < {mp}/early.txt").stdout == "after\n20000\n"
    # Creating a vault on the full disk: a one-line error, the registry unchanged.
    for bs in ("64k", "4k", "512"):  # fill the tmpfs to the last block, from the host side
        subprocess.run(["dd", "if=/dev/zero", f"of={tiny_tmpfs}/filler-{bs}", f"bs={bs}"], capture_output=True)
    registry = (world.home / ".config" / "nsshell" / "vaults.toml").read_bytes()
    made = world.run("create", "second", "--passfile", world.passfile, "--cipher-dir", f"{tiny_tmpfs}/c2")
    if made.returncode == 0:
        pytest.fail("gocryptfs -init succeeded on a full tmpfs; the test could not fill it")
    assert made.stderr.startswith("nsshell: ") and made.stderr.count("\n") == 1, made.stderr
    assert (world.home / ".config" / "nsshell" / "vaults.toml").read_bytes() == registry
    assert not os.path.exists(f"{tiny_tmpfs}/c2")
    record("fault-enospc", dd_error="No space left on device", early_data_intact=True, fsck=code)
