"""Load and soak, through the real CLI, with every leak counted afterwards.

Counts printed with [reliability] lines (pytest -s) and appended to
$NSSHELL_RELIABILITY_REPORT; docs/reliability.md quotes a real run."""

import os
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from reliability import (
    assert_nothing_left,
    gocryptfs_pids,
    keeper_status,
    leftovers,
    record,
    state_record,
    wait_for,
)

pytestmark = [pytest.mark.namespaces, pytest.mark.soak]


def _readable_backend(world):
    """Counting gocryptfs's fds needs a backend whose /proc/PID/fd we may read:
    the plain binary, not the hardened execute-only copy (which is non-dumpable)."""
    world.env["NSSHELL_GOCRYPTFS"] = "/usr/bin/gocryptfs"


def _holder_fd_counts(world, name):
    """(keeper fds from its STATUS, gocryptfs fds from /proc)."""
    status = keeper_status(world, name)
    backend = state_record(world, name)["backend"][0]
    return status["open_fds"], len(os.listdir(f"/proc/{backend}/fd"))


def _counts(world, name):
    status = keeper_status(world, name) or {}
    left = leftovers(world, name)
    return {
        "holder_processes": len(left["holder_processes"]),
        "sessions": len(status.get("sessions", [])),
        "members": len(status.get("members", [])),
        "mount_namespaces": len(left["mount_namespaces"]),
        "host_mounts": len(left["host_mounts"]),
        "runtime_files": left["runtime_files"],
        "keeper_fds": status.get("open_fds"),
    }


def test_50_concurrent_sessions_in_one_vault(world):
    n = 50
    _readable_backend(world)
    mp = world.create("taxes")
    world.open("taxes")
    base_fds = _holder_fd_counts(world, "taxes")
    gate = world.home / "gate"  # under HOME: inside a vault, /tmp is the vault's own (docs/context.md)
    sessions = [
        subprocess.Popen(
            [world.exe, "run", "taxes", "--", "sh", "-c",
             f"echo $$ > {mp}/s{i}; while [ ! -e {gate} ]; do sleep 0.05; done; cat {mp}/s{i}"],
            env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(n)
    ]
    wait_for(lambda: len(keeper_status(world, "taxes")["sessions"]) == n, timeout=120, interval=0.1,
             what=f"{n} sessions")
    during = _counts(world, "taxes")
    assert during["sessions"] == n and during["holder_processes"] == 3
    assert during["mount_namespaces"] == 1  # every session sees the one mount
    gate.touch()
    results = [(p.wait(120), p.stdout.read(), p.stderr.read()) for p in sessions]
    for p in sessions:
        p.stdout.close()
        p.stderr.close()
    assert [r[0] for r in results] == [0] * n, [r[2] for r in results if r[0]]
    assert sorted(os.listdir(mp)) == []  # outside: still nothing
    listing = world.run("run", "taxes", "--", "ls", mp, check=True).stdout.split()
    assert sorted(listing) == sorted(f"s{i}" for i in range(n))
    wait_for(lambda: keeper_status(world, "taxes")["sessions"] == [], what="sessions to end")
    after = _counts(world, "taxes")
    after_fds = _holder_fd_counts(world, "taxes")
    record("soak-50-sessions", sessions_peak=during["sessions"], **{f"after_{k}": v for k, v in after.items()},
           keeper_fds_before=base_fds[0], keeper_fds_after=after_fds[0],
           gocryptfs_fds_before=base_fds[1], gocryptfs_fds_after=after_fds[1])
    assert after["sessions"] == 0 and after["members"] == 0 and after["holder_processes"] == 3
    assert after_fds[0] == base_fds[0]
    # NAME.bus: the directory of the vault's session bus, NAME.dconf: where the
    # host's dconf settings are seen inside; both empty outside (docs/gui.md).
    assert sorted(after["runtime_files"]) == ["taxes.bus", "taxes.dconf", "taxes.log", "taxes.sock", "taxes.state"]
    world.run("lock", "taxes", check=True)
    left = assert_nothing_left(world, "taxes")
    record("soak-50-sessions-locked", **{k: len(v) for k, v in left.items()})


def test_20_vaults_open_at_once(world):
    n = 20
    names = [f"v{i:02d}" for i in range(n)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda name: world.create(name), names))
    with ThreadPoolExecutor(n) as pool:
        opened = list(pool.map(lambda name: world.run("open", name, "--passfile", world.passfile), names))
    assert [r.returncode for r in opened] == [0] * n, [r.stderr for r in opened if r.returncode]
    # Each vault sees its own file, and no other vault's.
    for name in names:
        world.run("run", name, "--", "sh", "-c", f"echo {name} > {world.mountpoint(name)}/{name}.txt", check=True)
    seen = world.run("run", "v07", "--", "sh", "-c",
                     " ".join(f"cat {world.mountpoint(n_)}/{n_}.txt 2>/dev/null;" for n_ in names)).stdout
    assert seen == "v07\n"
    holders = world.holder_pids()
    keepers = {name: keeper_status(world, name) for name in names}
    assert all(s["state"] == "open" and s["sessions"] == [] for s in keepers.values())
    namespaces = {s["mount_namespace"] for s in keepers.values()}
    runtime = world.runtime_files()
    record("soak-20-vaults", vaults_open=len(keepers), holder_processes=len(holders),
           gocryptfs=len(gocryptfs_pids(world)), distinct_mount_namespaces=len(namespaces),
           runtime_files=len(runtime), host_mounts=sum(len(leftovers(world, n_)["host_mounts"]) for n_ in names))
    assert len(holders) == 3 * n and len(gocryptfs_pids(world)) == n and len(namespaces) == n
    assert sorted(runtime) == sorted(f"{name}.{ext}" for name in names for ext in ("bus", "dconf", "log", "sock", "state"))
    world.run("lock", "--all", check=True)
    left = assert_nothing_left(world, *names, timeout=60)
    record("soak-20-vaults-locked", **{k: len(v) for k, v in left.items()})


def test_500_enter_leave_cycles(world):
    """400 `nsshell run NAME -- true` and 100 `nsshell enter NAME` (a shell that
    exits at once) on an open vault, two at a time (CI has two cores)."""
    runs, enters = 400, 100
    _readable_backend(world)
    world.create("taxes")
    world.open("taxes")
    before = _holder_fd_counts(world, "taxes")
    holders_before = world.holder_pids()
    failures = []

    def cycle(i):
        if i % 5 == 4:
            r = world.run("enter", "taxes", "--shell", "/bin/sh", input="exit 0\n")
        else:
            r = world.run("run", "taxes", "--", "true")
        if r.returncode != 0:
            failures.append((i, r.returncode, r.stderr))

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(cycle, range(runs + enters)))
    assert failures == []
    wait_for(lambda: keeper_status(world, "taxes")["sessions"] == [], what="the last session to end")
    after = _holder_fd_counts(world, "taxes")
    counts = _counts(world, "taxes")
    record("soak-500-cycles", cycles=runs + enters, run_cycles=runs, enter_cycles=enters, failures=len(failures),
           keeper_fds_before=before[0], keeper_fds_after=after[0], gocryptfs_fds_before=before[1],
           gocryptfs_fds_after=after[1], **{f"after_{k}": v for k, v in counts.items() if k != "keeper_fds"})
    assert world.holder_pids() == holders_before  # the same three processes throughout
    assert after[0] == before[0]
    assert after[1] <= before[1] + 2  # go's runtime may keep a spare fd or two; never one per cycle
    assert counts["sessions"] == 0 and counts["members"] == 0
    world.run("lock", "taxes", check=True)
    assert_nothing_left(world, "taxes")


def test_20_racing_unlocks_of_one_locked_vault(world):
    n = 20
    mp = world.create("taxes")
    seen_gocryptfs, seen_supervisors = set(), set()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen_gocryptfs.update(gocryptfs_pids(world))
            state = state_record(world, "taxes")
            if state and state.get("supervisor"):
                seen_supervisors.add(tuple(state["supervisor"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(n) as pool:
            results = list(pool.map(
                lambda i: world.inside("taxes", f"echo {i} > {mp}/r{i}; sleep 1", check=False), range(n)))
    finally:
        stop.set()
        watcher.join()
    assert [r.returncode for r in results] == [0] * n, [r.stderr for r in results if r.returncode]
    listing = world.inside("taxes", f"ls {mp}").stdout.split()
    assert sorted(listing) == sorted(f"r{i}" for i in range(n))
    left = assert_nothing_left(world, "taxes", timeout=60)
    record("soak-20-racing-unlocks", unlocks=n, succeeded=sum(r.returncode == 0 for r in results),
           gocryptfs_processes_seen=len(seen_gocryptfs), holders_seen=len(seen_supervisors),
           **{f"after_{k}": len(v) for k, v in left.items()})
    assert len(seen_gocryptfs) == 1 and len(seen_supervisors) == 1
