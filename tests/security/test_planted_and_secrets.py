"""Planted runtime directories, the passphrase's whereabouts, and unlocks
that fail part-way."""

import os
import secrets
import signal
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from reliability import assert_nothing_left, assert_one_line_error, fsck, gocryptfs_pids, record, wait_for

pytestmark = pytest.mark.namespaces

FAULTINJECT = str(Path(__file__).resolve().parent.parent / "faultinject" / "nsshell_faults.py")


# --- planted runtime / fallback directories ---------------------------------------------


def _plant(kind, where, private_target):
    if kind == "symlink-to-private-dir":
        where.symlink_to(private_target)
    elif kind == "dangling-symlink":
        where.symlink_to(private_target / "nowhere")
    elif kind == "world-writable-dir":
        where.mkdir()
        where.chmod(0o777)
    elif kind == "group-readable-dir":
        where.mkdir()
        where.chmod(0o750)
    elif kind == "regular-file":
        where.write_text("")
    elif kind == "fifo":
        os.mkfifo(where)


PLANTS = ["symlink-to-private-dir", "dangling-symlink", "world-writable-dir", "group-readable-dir", "regular-file", "fifo"]


@pytest.mark.parametrize("fallback", [False, True], ids=["xdg", "tmpdir-fallback"])
@pytest.mark.parametrize("kind", PLANTS)
def test_planted_runtime_directory_is_refused(world, kind, fallback):
    world.create("taxes")
    planted_root = world.root / "planted"
    planted_root.mkdir(mode=0o755)
    target = world.root / "target"
    target.mkdir(mode=0o700)
    if fallback:
        where = planted_root / f"nsshell-{os.getuid()}"
        env = {"XDG_RUNTIME_DIR": "", "TMPDIR": str(planted_root)}
    else:
        where = planted_root / "nsshell"
        env = {"XDG_RUNTIME_DIR": str(planted_root)}
    _plant(kind, where, target)
    before = sorted(os.listdir(target))
    for args in (["run", "taxes", "--passfile", world.passfile, "--", "true"], ["run", "taxes", "--", "true"],
                 ["open", "taxes", "--passfile", world.passfile], ["list"], ["status", "taxes"], ["lock", "--all"]):
        result = world.run(*args, env=env)
        assert_one_line_error(result)
        assert result.returncode == 8, (args, result.stderr)
        assert str(where) in result.stderr
    assert sorted(os.listdir(target)) == before  # nothing was created through a link
    assert world.holder_pids() == []
    record("planted-runtime-dir", kind=kind, fallback=fallback, refused=6)


def test_runtime_directory_of_another_owner_is_refused(world, monkeypatch):
    """No second uid can create files unprivileged, so the owner is what we fake
    (posix.getuid seen by nsshell.paths); the check is the real one."""
    from nsshell import paths
    from nsshell.errors import UNSAFE, NsshellError

    d = world.root / "someone-elses"
    d.mkdir(mode=0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(paths.posix, "getuid", lambda: real_uid + 1)
    with pytest.raises(NsshellError) as info:
        paths.check_private_dir(str(d))
    assert info.value.code == UNSAFE
    assert f"belongs to uid {real_uid}, not to you" in info.value.message
    assert "\n" not in info.value.message


def test_unwritable_runtime_parent_is_a_clear_error(world):
    result = world.run("list", env={"XDG_RUNTIME_DIR": "/"})
    assert_one_line_error(result)
    assert result.returncode == 8 and "cannot create the runtime directory /nsshell" in result.stderr


# --- the passphrase ------------------------------------------------------------------------


def _scan_processes(needle):
    hits = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        for what in ("cmdline", "environ"):
            try:
                with open(f"/proc/{pid}/{what}", "rb") as f:
                    if needle in f.read():
                        hits.append(f"/proc/{pid}/{what}")
            except OSError:
                pass
    return hits


def _scan_files(needle, *directories):
    hits = []
    for directory in directories:
        for root, _dirs, files in os.walk(directory):
            for name in files:
                path = os.path.join(root, name)
                try:
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        with open(path, "rb") as f:
                            if needle in f.read():
                                hits.append(path)
                except OSError:
                    pass
    return hits


def test_passphrase_never_appears_during_unlock_while_open_or_after_lock(world):
    secret = f"pp-{secrets.token_hex(12)}"
    needle = secret.encode()
    passfile = world.root / "unique-pass"  # outside HOME and the runtime dir
    passfile.write_text(secret + "\n")
    world.run("create", "taxes", "--passfile", passfile, check=True)
    mp = world.mountpoint("taxes")
    hits, scans_during_scrypt = [], [0]
    stop = threading.Event()

    def scanner():
        while not stop.is_set():
            alive = gocryptfs_pids(world)
            hits.extend(_scan_processes(needle))
            hits.extend(_scan_files(needle, world.home, world.runtime))
            if alive:
                scans_during_scrypt[0] += 1

    thread = threading.Thread(target=scanner)
    thread.start()
    try:
        world.run("open", "taxes", "--passfile", passfile, check=True)
    finally:
        stop.set()
        thread.join()
    # The scan overlapped gocryptfs's start-up at least once (scrypt takes a while).
    assert scans_during_scrypt[0] >= 1
    world.run("run", "taxes", "--", "sh", "-c", f"echo data > {mp}/f && sync", check=True)
    hits.extend(_scan_processes(needle))
    hits.extend(_scan_files(needle, world.home, world.runtime))
    log = world.runtime / "nsshell" / "taxes.log"
    assert log.exists() and needle not in log.read_bytes()
    # A wrong passphrase attempt on a second vault, and its error path, too.
    wrong = world.root / "wrong-pass"
    wrong_secret = f"wrong-{secrets.token_hex(8)}"
    wrong.write_text(wrong_secret + "\n")
    world.run("create", "other", "--passfile", passfile, check=True)
    bad = world.run("run", "other", "--passfile", wrong, "--", "true")
    assert bad.returncode == 4 and wrong_secret not in bad.stderr
    world.run("lock", "--all", check=True)
    assert_nothing_left(world, "taxes", "other")
    hits.extend(_scan_processes(needle) + _scan_processes(wrong_secret.encode()))
    hits.extend(_scan_files(needle, world.home, world.runtime) + _scan_files(wrong_secret.encode(), world.home, world.runtime))
    record("passphrase-scan", scans_during_unlock=scans_during_scrypt[0], hits=len(hits))
    assert hits == []


# --- unlocks that fail part-way --------------------------------------------------------------

FAKE_GOCRYPTFS = {
    # exits non-zero at once (after reading the passphrase)
    "exits-1": "cat >/dev/null; exit 1",
    # says "serving" (SIGUSR1 to -notifypid), then exits: the FUSE fd dies with it
    "notifies-then-exits": 'for a; do case $prev in -notifypid) kill -USR1 "$a";; esac; prev=$a; done; exit 0',
    # crashes with a signal while "deriving the key"
    "segfaults": "cat >/dev/null; kill -SEGV $$",
    # says "serving", then never answers a FUSE request (the holder's first
    # read would block forever; the supervisor gives up after 20 s)
    "notifies-then-hangs": 'for a; do case $prev in -notifypid) kill -USR1 "$a";; esac; prev=$a; done; exec sleep 600',
}


def _fake_bin(world, body):
    bindir = world.root / "fakebin"
    bindir.mkdir(exist_ok=True)
    fake = bindir / "gocryptfs"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    # NSSHELL_GOCRYPTFS too: a hardened copy, where installed, wins over PATH.
    return {"PATH": f"{bindir}:{world.env['PATH']}", "NSSHELL_GOCRYPTFS": str(fake)}


def _assert_never_written_bare(world, result):
    mp = world.mountpoint("taxes")
    assert_one_line_error(result)
    assert "leaked" not in result.stdout
    assert os.listdir(mp) == []
    assert_nothing_left(world, "taxes")
    # The real gocryptfs still opens the untouched vault afterwards.
    assert world.inside("taxes", f"cat {mp}/kept.txt").stdout == "kept\n"


def _seed(world):
    mp = world.create("taxes")
    world.inside("taxes", f"echo kept > {mp}/kept.txt && sync")
    assert_nothing_left(world, "taxes")
    return mp


@pytest.mark.parametrize("fake", sorted(FAKE_GOCRYPTFS))
def test_failing_backend_never_lets_a_session_write_into_the_bare_mountpoint(world, fake):
    mp = _seed(world)
    env = _fake_bin(world, FAKE_GOCRYPTFS[fake])
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "sh", "-c",
                       f"echo leaked > {mp}/leak.txt; echo leaked", env=env, timeout=200)
    _assert_never_written_bare(world, result)
    record("failed-unlock", cause=f"fake gocryptfs: {fake}", bare_writes=0)


@pytest.mark.parametrize("fault", ["fuse-denied", "mount-fails", "mount-noop"])
def test_fuse_unusable_never_lets_a_session_write_into_the_bare_mountpoint(world, fault):
    mp = _seed(world)
    env = {"NSSHELL_TEST_FAULTINJECT": FAULTINJECT, "NSSHELL_TEST_FAULT": fault}
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "sh", "-c",
                       f"echo leaked > {mp}/leak.txt; echo leaked", env=env, timeout=200)
    _assert_never_written_bare(world, result)
    record("failed-unlock", cause=f"injected: {fault}", bare_writes=0)


def test_gocryptfs_killed_during_startup_never_lets_a_session_write(world):
    mp = _seed(world)
    proc = subprocess.Popen(
        [world.exe, "run", "taxes", "--passfile", str(world.passfile), "--", "sh", "-c",
         f"echo leaked > {mp}/leak.txt; echo leaked"],
        env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    pid = wait_for(lambda: gocryptfs_pids(world), what="gocryptfs to start")[0]
    os.kill(pid, signal.SIGKILL)  # during scrypt, before it serves
    out, err = proc.communicate(timeout=120)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if result.returncode == 0:
        pytest.fail(f"gocryptfs finished starting before the kill landed; stdout={out!r}")
    _assert_never_written_bare(world, result)
    code, output = fsck(world, "taxes")
    assert code == 0, output
    record("failed-unlock", cause="gocryptfs SIGKILLed during scrypt", bare_writes=0)


# --- the holder's code comes from the install, never from the caller's cwd ---------------


def test_a_planted_nsshell_package_in_the_cwd_is_never_imported_by_the_holder(vault):
    """`python -c` puts the cwd first on sys.path.  An unlock started in a
    directory that holds an `nsshell/` package (a downloaded repository, a
    checkout of another version) must still run the installed holder."""
    world = vault
    planted = world.root / "project"
    package = planted / "nsshell"
    package.mkdir(parents=True)
    marker = world.root / "planted-code-ran"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (package / "holder.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    world.run("open", "taxes", "--passfile", world.passfile, cwd=planted, check=True)
    assert world.state("taxes")["state"] == "open"
    assert not marker.exists(), "the holder imported nsshell from the caller's working directory"


def test_the_holder_runs_no_sitecustomize_from_the_environment(vault):
    """The holder starts isolated (-I -S): PYTHONPATH and the user's site
    directory, which any process of the user can write to, cannot put code
    into the process that keeps the vault and reads its passphrase.  (Fault
    injection in tests goes through NSSHELL_TEST_FAULTINJECT instead.)"""
    world = vault
    planted = world.root / "planted-site"
    planted.mkdir()
    marker = world.root / "planted-code-ran"
    code = f"import sys\nif 'nsshell.holder' in sys.argv:\n    open({str(marker)!r}, 'w').write('ran')\n"
    (planted / "sitecustomize.py").write_text(code)
    (planted / "usercustomize.py").write_text(code)
    world.run("open", "taxes", "--passfile", world.passfile, env={"PYTHONPATH": str(planted)}, check=True)
    assert world.state("taxes")["state"] == "open"
    assert not marker.exists(), "the holder imported a sitecustomize from PYTHONPATH"
