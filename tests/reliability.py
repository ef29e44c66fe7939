"""Helpers shared by tests/security, tests/faults and tests/soak: counting
what a vault leaves behind, scanning for secrets, talking to a holder raw.

Every count here is taken from the outside, the way an attacker or an admin
would see it: /proc, the runtime directory, and the holder's own STATUS
reply (the keeper is non-dumpable, so its fd count comes from itself).
"""

import json
import os
import subprocess
import time
from pathlib import Path

import psutil

REPORT = Path(os.environ.get("NSSHELL_RELIABILITY_REPORT", "/tmp/nsshell-reliability.jsonl"))


def record(event, **figures):
    """Append one measured figure to the run's report (docs/reliability.md
    quotes it) and print it, so `pytest -s` shows the counts too."""
    line = {"event": event, **figures}
    print(f"[reliability] {json.dumps(line, sort_keys=True)}")
    try:
        with open(REPORT, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")
    except OSError:
        pass


def my_pids():
    """Every live process of this uid except ourselves."""
    me, uid = os.getpid(), os.getuid()
    found = []
    for proc in psutil.process_iter(["pid", "uids", "status"]):
        try:
            if proc.info["uids"] is None or proc.info["uids"].real != uid or proc.pid == me:
                continue
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:
            continue
        found.append(proc.pid)
    return found


def raw_request(world, name, line, max_fds=0):
    """One request to the holder's socket, as any same-uid program could send it."""
    from nsshell import client

    return client.request(name, line, str(world.runtime / "nsshell"), max_fds=max_fds)


def keeper_status(world, name):
    reply = raw_request(world, name, "STATUS")
    return None if reply is None else json.loads(reply[0])


def state_record(world, name):
    path = world.runtime / "nsshell" / f"{name}.state"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def gocryptfs_pids(world):
    found = []
    for pid in world.holder_pids():
        try:
            if psutil.Process(pid).name() == "gocryptfs":
                found.append(pid)
        except psutil.Error:
            pass
    return found


def vault_mount_namespaces(mountpoint):
    """Mount namespaces (readable from here) in which mountpoint is a FUSE mount.

    The keeper's own /proc/PID/mountinfo is unreadable (non-dumpable); sessions'
    are readable (NAMESPACE-FACTS 8).  The host's must never show it."""
    target = str(mountpoint)
    found = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/mountinfo", encoding="utf-8", errors="replace") as f:
                text = f.read()
            ns = os.readlink(f"/proc/{pid}/ns/mnt")
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split()
            if len(fields) > 4 and fields[4] == target and " fuse." in line:
                found.add(ns)
    return found


def host_mounts(mountpoint):
    target = str(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return [line for line in f if line.split()[4] == target]


def leftovers(world, *names):
    """What is left of these vaults once they should be locked: all must be empty."""
    return {
        "holder_processes": world.holder_pids(),
        "runtime_files": world.runtime_files(),
        "host_mounts": [m for n in names for m in host_mounts(world.mountpoint(n))],
        "mount_namespaces": sorted(ns for n in names for ns in vault_mount_namespaces(world.mountpoint(n))),
        "plaintext_in_bare_mountpoints": [p for n in names for p in os.listdir(world.mountpoint(n))],
    }


def assert_nothing_left(world, *names, timeout=20.0):
    """Wait (holders unmount and exit asynchronously) until nothing is left."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(world, *names)
        if not any(left.values()):
            return left
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: {left}")
        time.sleep(0.1)


def fsck(world, name, passphrase=None, cipher_dir=None):
    """gocryptfs -fsck -q on the cipher dir, passphrase on stdin: (code, output)."""
    from conftest import PASSPHRASE

    result = subprocess.run(
        ["gocryptfs", "-fsck", "-q", "--", str(cipher_dir or world.cipher_dir(name))],
        input=((passphrase or PASSPHRASE) + "\n").encode(),
        capture_output=True,
        timeout=120,
    )
    return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def assert_one_line_error(result):
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("nsshell: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def end_processes(processes):
    """End a test's helper processes (bus daemons, mocks, X programs), the
    last started first: SIGTERM, then SIGKILL after 10 s."""
    for proc in reversed(processes):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(predicate, timeout=30.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
