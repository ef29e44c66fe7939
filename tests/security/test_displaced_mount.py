"""Issue 12, item 6 (and the mountpoint and `ps` parts of item 8): no write
by a session may land on the host disk when the vault's mount is displaced
under a running session.

Each way the path can stop leading to the vault is tried for real: a move of
the mountpoint on the host (NAMESPACE-FACTS 23), an unmount or a cover from
inside by a same-user process that joined with its own hand-written client
(it holds every capability in the namespace until it execs, NAMESPACE-FACTS
24), and an outside tmux window opened from a vault shell.  After each, the
host mountpoint holds no file, and the vault locks where it must.
"""

import json
import os
import select
import shutil
import stat
import subprocess
import sys
import time

import pytest

from reliability import assert_one_line_error, keeper_status, record, wait_for

pytestmark = pytest.mark.namespaces

RACE_ROUNDS = 5

# A same-user program that joins the way `nsshell run` does, but does not
# exec: it still holds every capability in the vault's user namespace.
HAND_JOIN = r"""
import ctypes, json, socket, sys
from nsshell import kernel
sock_path, action = sys.argv[1], sys.argv[2:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock_path)
s.sendall(b"JOIN\n")
msg, anc, _, _ = s.recvmsg(4096, socket.CMSG_SPACE(8))
fds = [int.from_bytes(a[2][i:i + 4], sys.byteorder) for a in anc for i in range(0, len(a[2]) - 3, 4)]
assert msg.startswith(b"OK ") and len(fds) == 2, msg
kernel.join_namespaces(fds[0], fds[1])  # this process is single-threaded
print("joined", flush=True)
libc = ctypes.CDLL(None, use_errno=True)
if action[0] == "umount":
    rc = libc.umount2(action[1].encode(), 2)  # MNT_DETACH: umount -l
elif action[0] == "bind":
    rc = libc.mount(action[1].encode(), action[2].encode(), None, 4096, None)  # MS_BIND
print(json.dumps({"rc": rc, "errno": ctypes.get_errno()}), flush=True)
"""


def hand_join(world, *action):
    """Run HAND_JOIN; the keeper may SIGKILL it as soon as its mount changes."""
    result = subprocess.run(
        [sys.executable, "-c", HAND_JOIN, str(world.runtime / "nsshell" / "taxes.sock"), *map(str, action)],
        capture_output=True, text=True, env=world.env, timeout=60,
    )
    assert "joined" in result.stdout, result.stderr
    lines = result.stdout.split("\n")
    if len(lines) > 2 and lines[1]:
        assert json.loads(lines[1])["rc"] == 0, result.stdout  # the attack itself worked
    return result


def writer_loop(world, mp):
    """A session that appends to mp/log as fast as sh can, forever."""
    script = f"i=0; while :; do echo $i >> {mp}/log; i=$((i+1)); done"
    proc = subprocess.Popen(
        [world.exe, "run", "taxes", "--", "sh", "-c", script],
        env=world.env, cwd=world.home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # `nsshell run` execs the command in place: proc.pid is the session.
    wait_for(lambda: proc.pid in (keeper_status(world, "taxes") or {}).get("sessions", []), what="the writer to join")
    wait_for(lambda: world.run("run", "taxes", "--", "test", "-s", f"{mp}/log").returncode == 0,
             what="the writer to write")
    return proc


def vault_locked(world):
    """No holder, and no runtime file but NAME.reason, which a lock the user
    did not ask for leaves for the next unlock (nsshell.lockreason)."""
    return not world.holder_pids() and not [f for f in world.runtime_files() if not f.endswith(".reason")]


def wait_locked(world, timeout=30.0):
    wait_for(lambda: vault_locked(world), timeout=timeout, what="the vault to lock")


def keeper_gone(pid):
    from nsshell.kernel import process_start_time

    return process_start_time(pid) is None


def host_files(path):
    """What is in the bare directory at path, as the host sees it."""
    return sorted(os.listdir(path))


def test_the_bare_mountpoint_refuses_writes_from_outside(world):
    world.create("taxes")
    mp = world.mountpoint("taxes")
    for phase in ("created", "open"):
        if phase == "open":
            world.open("taxes")
        assert stat.S_IMODE(os.stat(mp).st_mode) & 0o222 == 0, oct(os.stat(mp).st_mode)
        with pytest.raises(PermissionError):
            open(mp / "notes.txt", "w")
        assert host_files(mp) == []


@pytest.mark.parametrize("how", ["move", "delete"])
def test_moving_the_mountpoint_on_the_host_ends_the_sessions_and_locks(world, how):
    """(a) A program moves ~/Vaults/taxes away (or deletes it) under a writing
    session, and later the path exists again: the session must be gone by then."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    writer = writer_loop(world, mp)
    moved = mp.parent / "moved"
    try:
        if how == "move":
            os.rename(mp, moved)
        else:
            os.rmdir(mp)  # the empty bare directory; the kernel detaches the mounts on it everywhere
        wait_locked(world)
        writer.wait(timeout=30)
        os.mkdir(mp, 0o755)
        time.sleep(0.5)  # a writer still alive would write here now
        assert host_files(mp) == []
        if how == "move":
            assert host_files(moved) == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    # Nothing was lost: the next unlock finds the log in the vault, and says
    # once why the vault locked (the keeper's log went with the lock).
    if how == "move":
        os.rmdir(moved)
    again = world.inside("taxes", f"test -s {mp}/log && echo kept")
    assert again.stdout == "kept\n"
    assert "nsshell: vault 'taxes' was locked at " in again.stderr, again.stderr
    # What the keeper saw first: a move is only seen as one; an rmdir also
    # detaches the mount, and either watch may report it.
    moved_text = f"{mp} or one of its parent directories was moved or deleted on the host"
    seen = [moved_text] if how == "move" else [moved_text, "the vault was unmounted"]
    assert any(f"its mountpoint stopped leading to the vault ({what}), so its sessions were ended" in again.stderr
               for what in seen), again.stderr
    assert "was locked" not in world.inside("taxes", "true").stderr  # once


def test_a_rename_and_recreate_race_leaves_a_measured_window(world):
    """The deliberate same-user version: rename and re-create at once.  What
    remains is the time the keeper needs to notice (inotify) and SIGKILL the
    session; measured here over a few rounds, stated in SECURITY.md.  What
    must hold every time: the session is killed and the vault locks."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    moved = mp.parent / "moved"
    windows, landed = [], []
    for _ in range(RACE_ROUNDS):
        world.open("taxes")
        writer = writer_loop(world, mp)
        pidfd = os.pidfd_open(writer.pid)
        try:
            started = time.monotonic()
            os.rename(mp, moved)
            os.mkdir(mp, 0o755)
            ready, _, _ = select.select([pidfd], [], [], 30)
            windows.append((time.monotonic() - started) * 1000)
            assert ready, "the writing session was not ended"
            writer.wait(timeout=30)
            wait_locked(world)
            log = mp / "log"
            landed.append(log.read_text().count("\n") if log.exists() else 0)
        finally:
            os.close(pidfd)
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        # Put the real (sealed, empty) mountpoint back for the next round.
        for name in os.listdir(mp):
            os.unlink(mp / name)
        os.rmdir(mp)
        os.rename(moved, mp)
    record(
        "displaced-mount-rename-race",
        rounds=RACE_ROUNDS,
        session_killed_after_ms=[round(w, 1) for w in windows],
        writes_on_host=landed,
    )


def test_an_unmount_inside_by_a_joined_process_locks_and_writes_nothing_to_disk(world):
    """(b) A same-user process JOINs with its own client and umount -l's the
    vault inside: the running writer must not reach the host directory."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    writer = writer_loop(world, mp)
    try:
        hand_join(world, "umount", mp)
        wait_locked(world)
        writer.wait(timeout=30)
        assert host_files(mp) == []
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert world.inside("taxes", f"test -s {mp}/log && echo kept").stdout == "kept\n"


def test_a_bind_mount_inside_the_vault_locks_it(world):
    """(c) A directory on disk bind-mounted over ~/Vaults/taxes/docs: the
    fstype at the mountpoint is still the vault's, but later writes to docs/
    would land on disk.  The keeper sees the submount and locks."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    world.inside("taxes", f"mkdir {mp}/docs")
    keeper = keeper_status(world, "taxes")["keeper_pid"]
    decoy = world.home / "decoy"
    decoy.mkdir()
    hand_join(world, "bind", decoy, f"{mp}/docs")
    again = world.inside("taxes", f"echo secret > {mp}/docs/leak.txt")
    assert os.listdir(decoy) == [] and host_files(mp) == []
    # The next unlock says why, without naming anything inside the vault
    # (NAME.reason waited on the host while the vault was locked).
    assert "was locked at" in again.stderr and f"mounted inside the vault at {mp}/...)" in again.stderr, again.stderr
    assert "docs" not in again.stderr
    assert keeper_gone(keeper), "the covered vault kept serving"
    assert world.inside("taxes", f"cat {mp}/docs/leak.txt").stdout == "secret\n"


def test_a_cover_with_the_vaults_own_subdirectory_locks_it(world):
    """(c) The vault's own subdirectory bound over the mountpoint: same fstype,
    same device, a different mount.  New sessions must not start on it."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    world.inside("taxes", f"mkdir {mp}/sub")
    keeper = keeper_status(world, "taxes")["keeper_pid"]
    hand_join(world, "bind", f"{mp}/sub", mp)
    world.inside("taxes", f"echo new > {mp}/new.txt")
    assert keeper_gone(keeper), "the covered vault kept serving"
    assert world.inside("taxes", f"cat {mp}/new.txt; ls {mp}/sub").stdout == "new\n"
    assert host_files(mp) == []


def test_a_tmux_window_opened_outside_cannot_write_into_the_bare_mountpoint(world):
    """(d) A tmux server started outside; from a vault shell, `tmux new-window`
    opens a shell outside whose cwd is the bare mountpoint.  Saving a file
    there must fail, and nothing may appear on the host."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    # Under HOME: inside a vault /tmp is the vault's own (docs/context.md).
    sock = world.home / "tmux.sock"
    report = world.home / "report"
    window = world.home / "window.sh"
    window.write_text(
        f"pwd > {report}.tmp\n"
        f"if echo plain > saved.txt; then echo wrote >> {report}.tmp; else echo refused >> {report}.tmp; fi\n"
        f"mv {report}.tmp {report}\n"
    )
    env = {k: v for k, v in world.env.items() if k != "TMUX"}
    subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-s", "t", "sleep 600"],
                   env=env, check=True, timeout=30)
    try:
        # The real tmux, by its path: nsshell's tmux wrapper inside a vault
        # refuses this request (tests/context/test_servers.py); this test is
        # about the layer below it, for a client that goes around the wrapper.
        real_tmux = shutil.which("tmux", path="/usr/local/bin:/usr/bin:/bin")
        world.inside("taxes", f"cd {mp} && {real_tmux} -S {sock} new-window -t t: 'sh {window}'")
        wait_for(report.exists, what="the outside window to report")
        where, outcome = report.read_text().split()
        assert where == str(mp)  # the new window really is outside, in the bare directory ...
        assert outcome == "refused"  # ... and cannot write there
        assert host_files(mp) == []
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], env=env, timeout=30)


def test_list_and_status_warn_when_the_bare_mountpoint_holds_files(world):
    world.create("taxes")
    mp = world.mountpoint("taxes")
    assert "warning" not in world.run("list", check=True).stderr
    mp.chmod(0o700)  # only a deliberate chmod lets a file in now
    (mp / "stray.txt").write_text("plaintext")
    listed = world.run("list", check=True)
    assert "warning: taxes:" in listed.stderr and "stray" not in listed.stderr
    assert "1 file in the bare mountpoint" in listed.stderr
    assert "warning:" in world.run("status", "taxes", check=True).stdout
    assert "bare mountpoint" in world.state("taxes")["warning"]


def test_an_unsafe_mountpoint_is_refused_at_unlock(world):
    """Item 8: a mountpoint that another user can write to, or that is not ours."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    os.chmod(mp, 0o777)
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "true")
    assert_one_line_error(result)
    assert result.returncode == 8 and "writable by other users" in result.stderr
    assert vault_locked(world)
    os.chmod(mp, 0o700)
    # Not ours: point the registry at a directory root owns.
    registry = world.home / ".config" / "nsshell" / "vaults.toml"
    registry.write_text(registry.read_text().replace(f'"{mp}"', '"/usr/share"'))
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "true")
    assert_one_line_error(result)
    assert result.returncode == 8 and "not to you" in result.stderr
    assert vault_locked(world)
    # create refuses one as well.
    shared = world.home / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    result = world.run("create", "other", "--passfile", world.passfile, "--mountpoint", shared)
    assert_one_line_error(result)
    assert result.returncode == 8


def test_ps_finds_a_process_moved_into_a_nested_namespace_and_force_lock_ends_it(world):
    """Item 8: `unshare -U -m` inside the vault keeps a copy of its mount; such
    a process still reads the plaintext, so it counts: ps shows it, it keeps
    the vault open, and lock --force ends it."""
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.inside("taxes", f"echo secret > {mp}/s.txt")
    pidfile = world.home / "nested.pid"  # under HOME: inside a vault /tmp is the vault's own
    world.inside("taxes", f"unshare -U -m --map-current-user sh -c 'echo $$ > {pidfile}.tmp; "
                          f"mv {pidfile}.tmp {pidfile}; exec sleep 600' >/dev/null 2>&1 &", timeout=60)
    wait_for(pidfile.exists, what="the nested process to start")
    nested = int(pidfile.read_text())
    with open(f"/proc/{nested}/root{mp}/s.txt") as f:
        assert f.read() == "secret\n"  # it sees the plaintext
    time.sleep(0.5)  # had the vault locked at the end of the session, it would be locking now
    assert world.state("taxes")["state"] == "open"
    ps = world.run("ps", "taxes", "--json", check=True)
    assert nested in [p["pid"] for p in json.loads(ps.stdout)]
    # Held open first: force-locking a vault that `run` opened (linger 0) is
    # issue 12 item 1, fixed on its own branch; this test is about the nested process.
    world.open("taxes")
    world.run("lock", "taxes", "--force", check=True, timeout=60)
    wait_for(lambda: not os.path.exists(f"/proc/{nested}") or _zombie(nested), what="the nested process to end")
    wait_locked(world)


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
