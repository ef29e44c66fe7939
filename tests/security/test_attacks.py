"""Attacks on an open vault, by the same user and by others.

What "without going through nsshell's own join path" means here: the holder's
control socket *is* the join path.  Any process of the same uid that can
connect to it may JOIN and get exactly what `nsshell run` gets (the namespace
fds, a capability-less session); that is by design and stated in SECURITY.md.
What must hold is that nothing *else* reaches the plaintext: not nsenter, not
/proc/PID/root, not /proc/PID/ns/*, not /proc/PID/fd of the keeper or the
supervisor, not a malformed request on the socket, and nothing at all for
another uid (0700 runtime dir, 0600 socket, SO_PEERCRED check).
"""

import json
import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from reliability import (
    assert_one_line_error,
    fsck,
    assert_nothing_left,
    keeper_status,
    leftovers,
    my_pids,
    record,
    state_record,
    wait_for,
)

pytestmark = pytest.mark.namespaces

SECRET = "the plaintext nobody outside may read"


def _open_with_secret(world):
    mp = world.mountpoint("taxes")
    world.open("taxes")
    world.inside("taxes", f"printf '{SECRET}' > {mp}/secret.txt && sync")
    return mp


def _attacks_on(pid, mp, vault_ns):
    """Every way we know for a same-uid process to reach pid's view of the vault.
    vault_ns is the vault's mount namespace ('mnt:[...]', from the keeper's
    STATUS).  Returns the attacks that got the plaintext or a handle on it."""
    won = []
    target = f"{mp}/secret.txt"
    try:
        with open(f"/proc/{pid}/root{target}") as f:
            if SECRET in f.read():
                won.append("proc-root")
    except OSError:
        pass
    try:
        if "secret.txt" in os.listdir(f"/proc/{pid}/cwd"):
            won.append("proc-cwd")
    except OSError:
        pass
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == vault_ns:
                won.append("proc-ns-mnt")  # an fd that setns() would accept
        finally:
            os.close(fd)
    except OSError:
        pass
    entered = subprocess.run(
        ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(pid), "cat", target],
        capture_output=True,
        text=True,
    )
    if entered.returncode == 0 and SECRET in entered.stdout:
        won.append("nsenter")
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == vault_ns:
                    won.append("proc-fd")
            except OSError:
                pass
    except OSError:
        pass
    return won


def test_open_vault_with_no_session_is_unreachable_from_every_process_of_the_user(world):
    world.create("taxes")
    mp = _open_with_secret(world)
    status = keeper_status(world, "taxes")
    assert status["sessions"] == [] and status["members"] == []
    state = state_record(world, "taxes")
    holder = {state[r][0] for r in ("supervisor", "keeper", "backend")}
    # Plus some decoys of our own: a shell and a python, started outside.
    decoys = [subprocess.Popen(["sleep", "60"]), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])]
    try:
        targets = my_pids()
        assert holder <= set(targets), "the holder's processes must be among those attacked"
        reached = {pid: won for pid in targets if (won := _attacks_on(pid, mp, status['mount_namespace']))}
    finally:
        for d in decoys:
            d.kill()
            d.wait()
    record("attack-no-session", processes_attacked=len(targets), attacks_per_process=5, reached=len(reached))
    assert reached == {}
    # The plaintext is still there for the join path: the probe is not blind.
    assert world.run("run", "taxes", "--", "cat", f"{mp}/secret.txt", check=True).stdout == SECRET


def test_with_a_session_open_same_user_code_can_get_in_as_security_md_says(world):
    """The documented limit (NAMESPACE-FACTS 8): session processes are exec'd
    inside the child user namespace, which the user owns."""
    world.create("taxes")
    mp = _open_with_secret(world)
    session = subprocess.Popen([world.exe, "run", "taxes", "--", "sleep", "60"], env=world.env)
    try:
        wait_for(lambda: session.pid in (keeper_status(world, "taxes") or {}).get("sessions", []), what="the session")
        vault_ns = keeper_status(world, "taxes")["mount_namespace"]
        assert {"nsenter", "proc-root", "proc-ns-mnt"} <= set(_attacks_on(session.pid, mp, vault_ns))
        # The holder's own processes stay closed even now.
        state = state_record(world, "taxes")
        for role in ("supervisor", "keeper"):
            assert _attacks_on(state[role][0], mp, vault_ns) == [], role
        # The session has no capabilities in the vault's namespace: it cannot
        # unmount the vault or remount anything (NAMESPACE-FACTS 9).
        with open(f"/proc/{session.pid}/status") as f:
            cap_eff = [line.split()[1] for line in f if line.startswith("CapEff:")][0]
        assert int(cap_eff, 16) == 0
    finally:
        session.kill()
        session.wait()
    # Once the session is gone, so is the way in.
    wait_for(lambda: (keeper_status(world, "taxes") or {}).get("sessions") == [], what="the session to end")
    for pid in my_pids():
        assert _attacks_on(pid, mp, vault_ns) == [], pid
    record("attack-with-session", session_reachable=True, holder_reachable=False)


JOIN_PROBE = (
    "import os, sys, json\n"
    "from nsshell import client, kernel\n"
    "text, fds = client.request(sys.argv[2], 'JOIN', sys.argv[1], max_fds=2)\n"
    "kernel.join_namespaces(*fds)\n"
    "out = {'secret': open(sys.argv[3]).read()}\n"
    "st = [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1]\n"
    "out['cap_eff_before_exec'] = int(st, 16)\n"
    "print(json.dumps(out), flush=True)\n"
    "out = {}\n"
    "if sys.argv[4] == 'umount':\n"
    "    kernel.unmount(os.path.dirname(sys.argv[3]), detach=True)\n"
    "    out['umount'] = 'ok'\n"
    "if sys.argv[4].startswith('cover='):\n"
    "    kernel._libc_call('mount', sys.argv[4][6:].encode(), os.path.dirname(sys.argv[3]).encode(), None, 4096, None)\n"
    "    out['cover'] = 'ok'\n"
    "print(json.dumps(out))\n"
)


def _raw_join(world, mp, action):
    """What the probe saw.  After an unmount or a cover the keeper ends the
    vault's sessions at once (SIGKILL), the probe among them: then its last
    line may be missing."""
    result = subprocess.run(
        [sys.executable, "-c", JOIN_PROBE, str(world.runtime / "nsshell"), "taxes", f"{mp}/secret.txt", action],
        capture_output=True, text=True, env=world.env, timeout=60,
    )
    assert result.returncode == 0 or (action != "read" and result.returncode == -9), result.stderr
    out = {}
    for line in result.stdout.splitlines():
        out.update(json.loads(line))
    return out


def test_raw_join_on_the_socket_is_the_join_path(world):
    """A hand-written JOIN gets what `nsshell run` gets: the plaintext.  The
    socket is the door, and any same-uid program may use it (SECURITY.md).
    What `nsshell run` adds is the exec: the command runs with no capabilities."""
    world.create("taxes")
    mp = _open_with_secret(world)
    out = _raw_join(world, mp, "read")
    assert out["secret"] == SECRET
    # Before its exec, a joined process holds every capability in the vault's
    # user namespace (kernel semantics of setns into a user namespace) ...
    assert out["cap_eff_before_exec"] != 0
    # ... and what `nsshell run` execs holds none: it cannot unmount the vault.
    probe = world.run("run", "taxes", "--", "sh", "-c",
                      f"grep CapEff /proc/self/status; umount -l {mp} 2>/dev/null && echo UNMOUNTED; cat {mp}/secret.txt")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[0].split()[1] == "0000000000000000"
    assert "UNMOUNTED" not in probe.stdout and SECRET in probe.stdout


def _locked_with_its_reason(world):
    """The keeper locked (nothing of it is left, nothing mounted), leaving
    only NAME.reason, which the next unlock prints once."""
    wait_for(lambda: not world.holder_pids() and world.runtime_files() == ["taxes.reason"],
             what=f"the vault to lock; left: {world.holder_pids()} {world.runtime_files()}")
    left = leftovers(world, "taxes")
    assert not any(value for key, value in left.items() if key != "runtime_files"), left


def test_a_vault_unmounted_from_inside_locks_itself(world):
    """A joined process can unmount the vault inside its namespace before it
    execs.  The keeper sees its mount go, ends the sessions and locks: the
    next command unlocks it afresh, and nothing lands in the bare directory.
    (tests/security/test_displaced_mount.py does it under a writing session.)"""
    world.create("taxes")
    mp = _open_with_secret(world)
    assert _raw_join(world, mp, "umount")["secret"] == SECRET
    _locked_with_its_reason(world)
    again = world.inside("taxes", f"cat {mp}/secret.txt")
    assert again.stdout == SECRET
    assert "its mountpoint stopped leading to the vault (" in again.stderr, again.stderr  # told once, here
    assert_nothing_left(world, "taxes")


def test_a_vault_covered_from_inside_locks_itself(world):
    """Or it can cover the vault with a bind mount of a directory on disk.
    gocryptfs keeps serving the hidden mount; later sessions must not start on
    the cover, where their writes would land on disk in plaintext
    (NAMESPACE-FACTS 5).  The keeper sees the mount table change, finds its
    mount covered, ends the sessions and locks."""
    world.create("taxes")
    mp = _open_with_secret(world)
    decoy = world.home / "decoy"
    decoy.mkdir()
    _raw_join(world, mp, f"cover={decoy}")
    _locked_with_its_reason(world)
    result = world.run("run", "taxes", "--", "sh", "-c", f"echo leaked > {mp}/leak.txt", input="")
    # First the line that says why it locked, then: locked, no passphrase here, so nothing starts.
    told, _, error = result.stderr.partition("\n")
    assert "its mountpoint stopped leading to the vault (" in told, result.stderr
    assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, result.stdout, error))
    assert os.listdir(decoy) == [] and os.listdir(mp) == []  # nothing reached the disk
    # The data is intact and the next unlock works.
    assert world.inside("taxes", f"cat {mp}/secret.txt").stdout == SECRET
    code, output = fsck(world, "taxes")
    assert code == 0, output


FUZZ = r"""
import json, socket, sys
path = sys.argv[1]
payloads = [b"", b"\n", b"join\n", b"JOINX\n", b"JOIN" + b" x" * 200 + b"\n", b"A" * 5000 + b"\n",
            b"\x00\xff\xfe\n", b"STATUS", b"HOLD\nJOIN\n", b"JOIN", b" JOIN\n", b"LOCK\x00force\n"]
out = []
for payload in payloads:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        data, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(4 * 4))
        fds = sum(len(a[2]) // 4 for a in anc)
    except OSError as exc:
        data, fds = repr(exc).encode(), 0
    s.close()
    out.append([payload.decode("latin-1")[:20], data.decode("latin-1")[:60], fds])
# Connections that send nothing, or half a line, then vanish.
for _ in range(20):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(b"JO")
    s.close()
print(json.dumps(out))
"""


def test_malformed_requests_on_the_socket_get_nothing_and_leak_nothing(world):
    """A same-uid program speaking garbage: only a request whose first word is
    JOIN receives fds (that is the join path); nothing crashes, nothing leaks.
    Sent from a child process: a JOIN registers the sender as a session."""
    world.create("taxes")
    mp = _open_with_secret(world)
    before = keeper_status(world, "taxes")["open_fds"]
    result = subprocess.run(
        [sys.executable, "-c", FUZZ, str(world.runtime / "nsshell" / "taxes.sock")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    replies = json.loads(result.stdout)
    for payload, data, fds in replies:
        words = payload.split()
        expected = 2 if words and words[0] == "JOIN" else 0
        assert fds == expected, (payload, data, fds)
    wait_for(lambda: keeper_status(world, "taxes")["sessions"] == [], what="the fuzzer's sessions to end")
    status = keeper_status(world, "taxes")
    assert status["state"] == "open"
    assert status["open_fds"] == before, (before, status["open_fds"])
    assert world.run("run", "taxes", "--", "cat", f"{mp}/secret.txt", check=True).stdout == SECRET
    record("socket-fuzz", payloads=len(replies) + 20, fds_leaked=status["open_fds"] - before)


def test_runtime_files_and_the_socket_are_closed_to_other_users(world):
    """What the kernel enforces for every other uid, checked by mode and owner:
    the runtime dir (socket, lock, state, log: vault names included) is 0700,
    the socket 0600; the registry and the names dir are private too."""
    world.create("taxes")
    world.open("taxes")
    runtime = world.runtime / "nsshell"
    info = os.lstat(runtime)
    assert stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700
    for name in os.listdir(runtime):
        entry = os.lstat(runtime / name)
        assert entry.st_uid == os.getuid()
        assert stat.S_IMODE(entry.st_mode) & 0o077 == 0, (name, oct(entry.st_mode))
    config = world.home / ".config" / "nsshell"
    assert stat.S_IMODE(os.lstat(config / "vaults.toml").st_mode) == 0o600
    assert stat.S_IMODE(os.lstat(config / "names").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(world.home / "Vaults").st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(world.cipher_dir("taxes")).st_mode) & 0o077 == 0


def test_keeper_says_nothing_to_a_peer_of_another_uid(tmp_path, monkeypatch):
    """SO_PEERCRED is checked before a request is even read.  No second uid is
    available unprivileged, so the peer's credentials are what we fake here;
    the check itself is the real Keeper.accept."""
    from nsshell import holder, kernel

    path = str(tmp_path / "k.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.setblocking(False)  # as the keeper's own: accept takes what is waiting
    spec = {"name": "taxes", "mountpoint": "/nonexistent", "runtime_dir": str(tmp_path), "cipher_dir": "/x"}
    keeper = holder.Keeper(spec, channel=None)
    keeper.user_ns_fd = os.open("/proc/self/ns/user", os.O_RDONLY)
    keeper.mount_ns_fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
    real = kernel.peer_credentials
    monkeypatch.setattr(kernel, "peer_credentials", lambda s: (real(s)[0], os.getuid() + 1, os.getgid() + 1))
    for request in (b"JOIN\n", b"STATUS\n", b"LOCK force\n", b"HOLD\n"):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(5)
        c.connect(path)
        c.sendall(request)
        keeper.accept(listener)
        try:
            data, anc, _, _ = c.recvmsg(4096, socket.CMSG_SPACE(8))
        except ConnectionResetError:  # closed with our request unread: nothing said
            data, anc = b"", []
        c.close()
        assert (data, anc) == (b"", []), request
    assert keeper.sessions == {} and keeper.hold is False
    # The same code path with our own uid does answer: the test can fail.
    monkeypatch.setattr(kernel, "peer_credentials", real)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(path)
    c.sendall(b"HOLD\n")
    keeper.accept(listener)
    keeper.run_once(5.0)  # the request is read through the keeper's poller
    assert c.recv(100) == b"OK\n"
    c.close()
    listener.close()
    os.close(keeper.user_ns_fd)
    os.close(keeper.mount_ns_fd)


def _second_user():
    """A second, unprivileged user we may act as with `sudo -n -u`, or None."""
    user = os.environ.get("NSSHELL_SECOND_USER", "nobody")
    if not shutil.which("sudo"):
        return None, "sudo is not installed"
    probe = subprocess.run(["sudo", "-n", "-u", user, "true"], capture_output=True)
    if probe.returncode != 0:
        return None, f"'sudo -n -u {user}' is not allowed here (set NSSHELL_SECOND_USER to a user you may sudo to)"
    return user, None


def test_another_user_cannot_connect_list_lock_or_enter(world):
    """Optional: runs only where a second user is usable via passwordless sudo.
    The mode and SO_PEERCRED tests above are the evidence that always runs."""
    user, why = _second_user()
    if user is None:
        pytest.skip(f"no second user to act as: {why}")
    world.create("taxes")
    mp = _open_with_secret(world)
    runtime = world.runtime / "nsshell"
    os.chmod(world.root, 0o755)  # let them reach the runtime dir's parent; nsshell/ stays 0700
    probes = {
        "list-runtime": ["ls", str(runtime)],
        "connect": [sys.executable, "-c", f"import socket; s=socket.socket(socket.AF_UNIX); s.connect({str(runtime / 'taxes.sock')!r}); s.sendall(b'LOCK force\\n'); print(s.recv(100))"],
        "nsenter": ["nsenter", "-U", "-m", "-t", str(state_record(world, "taxes")["keeper"][0]), "cat", f"{mp}/secret.txt"],
    }
    for what, argv in probes.items():
        result = subprocess.run(["sudo", "-n", "-u", user, *argv], capture_output=True, text=True)
        assert result.returncode != 0 and SECRET not in result.stdout, (what, result)
    assert keeper_status(world, "taxes")["state"] == "open"
