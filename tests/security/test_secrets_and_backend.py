"""Issue 12, items 2-5: one backend per cipher directory; the passphrase and
the master key out of reach of the user's other processes.

Every attack here is run as a same-user process against real holders and a
real gocryptfs, the way code running as the user would try it.
"""

import json
import os
import resource
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pexpect
import psutil
import pytest

from reliability import assert_one_line_error, record, state_record, wait_for

pytestmark = pytest.mark.namespaces

PLAIN_GOCRYPTFS = "/usr/bin/gocryptfs"


def _with_passphrase(world, passphrase):
    """Make this world's passfile hold passphrase (unique per test: other test
    runs of the same user share the default one, and the thief below scans
    every process of the user)."""
    world.passfile.write_text(passphrase + "\n")
    return passphrase


def _backends_of(cipher_dir):
    """Live gocryptfs processes serving cipher_dir (cmdline is readable even
    for a non-dumpable process)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if cmdline and os.path.basename(cmdline[0]) == "gocryptfs" and str(cipher_dir) in cmdline:
            if proc.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
    return found


def _holders_of(world):
    """Holder processes (any runtime directory) of this world."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "nsshell.holder" in cmdline and any(str(world.root) in a for a in cmdline):
            found.append(proc.pid)
    return found


# --- item 2: one backend per cipher directory ---------------------------------------------


def _fallback_env(world):
    """A terminal of the same user without XDG_RUNTIME_DIR: nsshell falls back
    to $TMPDIR/nsshell-UID (TMPDIR kept inside this test's directory)."""
    tmp = world.root / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    return {"XDG_RUNTIME_DIR": "", "TMPDIR": str(tmp)}, tmp / f"nsshell-{os.getuid()}"


def test_a_second_runtime_directory_refuses_then_lock_finds_the_vault(world):
    world.create("taxes")
    cipher = world.cipher_dir("taxes")
    other_env, other_dir = _fallback_env(world)
    world.open("taxes")
    assert len(_backends_of(cipher)) == 1
    for args in (["open", "taxes", "--passfile", world.passfile], ["run", "taxes", "--passfile", world.passfile, "--", "true"]):
        result = world.run(*args, env=other_env)
        assert_one_line_error(result)
        assert result.returncode == 6, result.stderr
        assert str(world.runtime / "nsshell") in result.stderr, result.stderr
        assert "nsshell lock taxes" in result.stderr
    assert len(_backends_of(cipher)) == 1
    # `lock --all` in the other terminal finds it where it is open.
    world.run("lock", "--all", env=other_env, check=True)
    wait_for(lambda: _backends_of(cipher) == [] and _holders_of(world) == [], what="the vault to lock")
    # And the other way round: opened without XDG_RUNTIME_DIR, locked with it.
    world.run("open", "taxes", "--passfile", world.passfile, env=other_env, check=True)
    assert len(_backends_of(cipher)) == 1
    assert world.run("open", "taxes", "--passfile", world.passfile).returncode == 6
    locked = world.run("lock", "taxes", check=True)
    assert "locked" in locked.stderr
    wait_for(lambda: _backends_of(cipher) == [] and _holders_of(world) == [], what="the vault to lock")
    assert sorted(os.listdir(other_dir)) == []
    record("two-runtime-dirs-sequential", backends_max=1, refused=4, locked_from_other_dir=2)


def test_racing_unlocks_from_two_runtime_directories_start_one_backend(world):
    world.create("taxes")
    cipher = world.cipher_dir("taxes")
    other_env, _ = _fallback_env(world)
    seen, stop = set(), threading.Event()
    most = [0]

    def watch():
        while not stop.is_set():
            now = _backends_of(cipher)
            seen.update(now)
            most[0] = max(most[0], len(now))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    results = [None] * 8

    def unlock(i):
        env = other_env if i % 2 else {}
        results[i] = world.run("open", "taxes", "--passfile", world.passfile, env=env, timeout=300)

    try:
        threads = [threading.Thread(target=unlock, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        stop.set()
        watcher.join()
    codes = [r.returncode for r in results]
    assert set(codes) <= {0, 6}, [r.stderr for r in results]
    winners = {i % 2 for i, r in enumerate(results) if r.returncode == 0}
    assert len(winners) == 1, "only the runtime directory that unlocked it can have it open"
    assert most[0] == 1 and len(seen) == 1, f"gocryptfs processes on one cipher dir: at most {most[0]} at once, {len(seen)} in all"
    for r in results:
        if r.returncode == 6:
            assert_one_line_error(r)
    for env in ({}, other_env):
        world.run("lock", "--all", env=env, check=True)
    wait_for(lambda: _backends_of(cipher) == [] and _holders_of(world) == [], what="the vault to lock")
    record("two-runtime-dirs-race", unlocks=len(results), succeeded=codes.count(0), refused=codes.count(6),
           backends_ever=len(seen), backends_at_once_max=most[0])


def test_doctor_points_out_two_runtime_directories(world):
    world.create("taxes")
    other_env, other_dir = _fallback_env(world)
    world.open("taxes")
    checks = {c["title"]: c for c in json.loads(world.run("doctor", "--json", env=other_env).stdout)}
    check = checks["runtime directories"]
    assert check["status"] == "warn", check
    assert str(world.runtime / "nsshell") in check["detail"] and str(other_dir) in check["detail"], check
    # (Other test runs of this user may hold vaults open elsewhere: look only for ours.)
    world.run("lock", "--all", env=other_env, check=True)
    wait_for(lambda: _holders_of(world) == [], what="the vault to lock")
    check = {c["title"]: c for c in json.loads(world.run("doctor", "--json", env=other_env).stdout)}["runtime directories"]
    assert str(world.runtime / "nsshell") not in check["detail"], check


# --- item 3: the passphrase never crosses anything /proc can open ------------------------

THIEF = textwrap.dedent(
    r'''
    import ctypes, errno, json, os, signal, sys, time
    needle, scope, stop_file = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
    libc = ctypes.CDLL(None, use_errno=True)
    me, uid = os.getpid(), os.getuid()
    own_r, own_w = os.pipe2(os.O_NONBLOCK)
    stolen, refused, opened = set(), {}, {"pipe": 0, "socket": 0}
    stopped, scans = {}, 0

    def peek(fd):
        """tee(): copy what sits in the pipe without taking it away."""
        n = libc.tee(fd, own_w, 1 << 16, 2)  # SPLICE_F_NONBLOCK
        data = b""
        if n > 0:
            while True:
                try:
                    chunk = os.read(own_r, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                data += chunk
        return data

    def mine(pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        return int(line.split()[1]) == uid
        except OSError:
            return False

    while not os.path.exists(stop_file):
        scans += 1
        time.sleep(0.001)
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (me, os.getppid()) or not mine(entry):
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            # Hold this world's gocryptfs still (signals need only the same uid),
            # so that what is written to it waits in its stdin.
            if argv and argv[0].endswith(b"gocryptfs") and scope.encode() in b" ".join(argv) and pid not in stopped:
                try:
                    os.kill(pid, signal.SIGSTOP)
                    stopped[pid] = time.monotonic()
                except OSError:
                    pass
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError as exc:
                refused[errno.errorcode[exc.errno] + "-listdir"] = refused.get(errno.errorcode[exc.errno] + "-listdir", 0) + 1
                continue
            for fd in fds:
                path = f"/proc/{pid}/fd/{fd}"
                try:
                    target = os.readlink(path)
                except OSError:
                    continue
                kind = target.split(":")[0]
                if kind not in ("pipe", "socket"):
                    continue
                try:
                    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError as exc:
                    key = f"{errno.errorcode[exc.errno]}-{kind}"
                    refused[key] = refused.get(key, 0) + 1
                    continue
                opened[kind] += 1
                try:
                    data = peek(handle) if kind == "pipe" else b""
                    if needle in data:
                        stolen.add(f"{argv[0].decode(errors='replace')} fd {fd} ({kind})")
                finally:
                    os.close(handle)
        now = time.monotonic()
        for pid, since in list(stopped.items()):
            if since and now - since > 1.5:
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
                stopped[pid] = 0
    for pid, since in stopped.items():
        if since:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
    print(json.dumps({"stolen": sorted(stolen), "refused": refused, "opened": opened, "stopped": len(stopped), "scans": scans}))
    '''
)


class Thief:
    """A same-user process that scans /proc/*/fd of every process of the user
    for pipes and sockets, opens each it can and peeks into it (tee), and
    holds this world's gocryptfs processes stopped for a moment so that a
    passphrase written to them waits there."""

    def __init__(self, world, passphrase):
        self.stop_file = world.root / "thief.stop"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", THIEF, passphrase, str(world.root), str(self.stop_file)],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stopped(self, cipher_dir):
        """Whether a gocryptfs of cipher_dir is being held stopped right now."""
        for pid in _backends_of(cipher_dir):
            try:
                if psutil.Process(pid).status() == psutil.STATUS_STOPPED:
                    return True
            except psutil.Error:
                pass
        return False

    def finish(self):
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=60)
        return json.loads(out)


def test_a_same_user_thief_never_reads_the_passphrase(world, tmp_path):
    passphrase = _with_passphrase(world, "thief-test " + secrets.token_hex(12))
    world.create("taxes")
    mp = world.mountpoint("taxes")
    cipher = world.cipher_dir("taxes")
    world.inside("taxes", f"echo secret > {mp}/f")
    world.wait_until(lambda: world.holder_pids() == [], timeout=60, what="auto-lock")
    askpass = world.root / "askpass"
    # Prints the passphrase, then stays alive a moment with its stdout still open.
    askpass.write_text(f"#!/bin/sh\ncat {world.passfile}\nsleep 1\n")
    askpass.chmod(0o700)
    thief = Thief(world, passphrase)
    outcomes = {}
    try:
        # Typed on a real terminal, while the thief holds gocryptfs stopped.
        child = pexpect.spawn(world.exe, ["run", "taxes", "--", "cat", f"{mp}/f"], env=world.env,
                              cwd=str(world.home), timeout=120, encoding="utf-8")
        child.expect("Passphrase for taxes: ")
        wait_for(lambda: thief.stopped(cipher), timeout=30, what="the thief to stop gocryptfs")
        child.sendline(passphrase)
        child.expect("secret")
        child.expect(pexpect.EOF)
        child.close()
        outcomes["typed"] = child.exitstatus
        world.wait_until(lambda: world.holder_pids() == [], timeout=60, what="auto-lock")
        # --passfile, --extpass and create (gocryptfs -init).
        for kind, args in (
            ("passfile", ["run", "taxes", "--passfile", world.passfile, "--", "cat", f"{mp}/f"]),
            ("extpass", ["run", "taxes", "--extpass", str(askpass), "--", "cat", f"{mp}/f"]),
        ):
            result = world.run(*args, timeout=180)
            outcomes[kind] = result.returncode if result.stdout == "secret\n" else f"{result.returncode}: {result.stderr}"
            world.wait_until(lambda: world.holder_pids() == [], timeout=60, what="auto-lock")
        result = world.run("create", "second", "--passfile", world.passfile, timeout=180)
        outcomes["create"] = result.returncode
    finally:
        report = thief.finish()
    record("passphrase-thief", outcomes=outcomes, **report)
    assert outcomes == {"typed": 0, "passfile": 0, "extpass": 0, "create": 0}, outcomes
    assert report["stolen"] == [], report
    assert report["opened"]["socket"] == 0, report
    assert report["scans"] > 10 and report["stopped"] >= 1, report


# --- item 4: core dumps, environment, inherited fds and cwd ------------------------------


def _core_files(directory):
    return [p for p in os.listdir(directory) if p.startswith("core")]


def test_client_is_non_dumpable_while_it_holds_the_passphrase(world, tmp_path):
    passphrase = _with_passphrase(world, "core-test " + secrets.token_hex(12))
    world.create("taxes")
    cipher = world.cipher_dir("taxes")
    crashdir = tmp_path / "crash"
    crashdir.mkdir()
    child = pexpect.spawn(world.exe, ["run", "taxes", "--", "true"], env=world.env, cwd=str(crashdir), timeout=120)
    child.expect("Passphrase for taxes: ")
    # Non-dumpable: its /proc files belong to root (the directory itself keeps
    # the task's uid), and its environ cannot be opened.
    assert os.stat(f"/proc/{child.pid}/environ").st_uid == 0
    with pytest.raises(PermissionError):
        open(f"/proc/{child.pid}/environ", "rb").close()
    # So is the holder the passphrase will be sent to.
    supervisor = wait_for(lambda: (state_record(world, "taxes") or {}).get("supervisor"), what="the holder")[0]
    assert os.stat(f"/proc/{supervisor}/environ").st_uid == 0
    # Hold gocryptfs so the client waits with the passphrase in its memory.
    backends = wait_for(lambda: _backends_of(cipher), what="gocryptfs")
    for pid in backends:
        os.kill(pid, signal.SIGSTOP)
    try:
        child.sendline(passphrase)
        time.sleep(1.0)
        resource.prlimit(child.pid, resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        os.kill(child.pid, signal.SIGABRT)
        child.expect(pexpect.EOF)
        child.close()
    finally:
        for pid in backends:
            os.kill(pid, signal.SIGCONT)
    assert child.signalstatus == signal.SIGABRT
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    cores = _core_files(crashdir)
    record("client-core-dump", core_pattern=pattern, cores=len(cores))
    if pattern.startswith("|") or pattern.startswith("/"):
        return  # cores go elsewhere on this machine; the non-dumpable check above stands
    assert cores == [], f"core written while the passphrase was in memory: {cores}"


def test_the_command_gets_the_core_limit_back(world):
    world.create("taxes")
    soft = 4096 * 1024

    def limit():
        resource.setrlimit(resource.RLIMIT_CORE, (soft, resource.getrlimit(resource.RLIMIT_CORE)[1]))

    result = subprocess.run(
        [world.exe, "run", "taxes", "--passfile", str(world.passfile), "--", "sh", "-c", "awk '/core file/ {print $5}' /proc/$$/limits; stat -c %u /proc/$$/environ"],
        env=world.env, cwd=world.home, capture_output=True, text=True, timeout=120, preexec_fn=limit,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(soft), str(os.getuid())]  # its limit, and dumpable again


def test_gocryptfs_gets_a_scrubbed_environment(world):
    world.create("taxes")
    env = {"GOTRACEBACK": "crash", "GODEBUG": "madvdontneed=1", "LD_BIND_NOW": "1", "NSSHELL_GOCRYPTFS": PLAIN_GOCRYPTFS}
    world.run("open", "taxes", "--passfile", world.passfile, env=env, check=True)
    backend = state_record(world, "taxes")["backend"][0]
    with open(f"/proc/{backend}/environ", "rb") as f:  # the plain binary is dumpable: readable
        names = {item.split(b"=", 1)[0].decode() for item in f.read().split(b"\0") if item}
    record("gocryptfs-environment", variables=sorted(names))
    assert not names & {"GOTRACEBACK", "GODEBUG", "LD_BIND_NOW", "NSSHELL_GOCRYPTFS", "XDG_RUNTIME_DIR"}, names
    assert "PATH" in names


class PrivateTmpfs:
    """A tmpfs mounted in a user+mount namespace of our own, reached from
    here through /proc/PID/root.  Unmounting it inside fails with EBUSY while
    any process has its cwd or an open file there: the test of "busy"."""

    def __init__(self, root):
        self.dir = root / "stick"
        self.dir.mkdir()
        self.proc = subprocess.Popen(
            ["unshare", "-Urm", "sh", "-c", f"mount -t tmpfs none {self.dir} && echo data > {self.dir}/file && echo ready && exec sleep 600"],
            stdout=subprocess.PIPE, text=True,
        )
        assert self.proc.stdout.readline().strip() == "ready"
        self.path = Path(f"/proc/{self.proc.pid}/root{self.dir}")

    def unmount(self):
        return subprocess.run(
            ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(self.proc.pid), "umount", str(self.dir)],
            capture_output=True, text=True,
        )

    def close(self):
        self.proc.kill()
        self.proc.wait()


@pytest.mark.parametrize("what", ["cwd", "fd 7"])
def test_holder_and_gocryptfs_keep_neither_the_callers_cwd_nor_its_fds(world, what):
    world.create("taxes")
    stick = PrivateTmpfs(world.root)
    try:
        if what == "cwd":
            script, cwd = f"exec {world.exe} open taxes --passfile {world.passfile}", stick.path
        else:
            script, cwd = f"exec 7<{stick.path}/file; exec {world.exe} open taxes --passfile {world.passfile}", "/"
        result = subprocess.run(["bash", "-c", script], env=world.env, cwd=cwd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert len(_backends_of(world.cipher_dir("taxes"))) == 1
        unmounted = stick.unmount()
        record("caller-state-kept", what=what, unmount_rc=unmounted.returncode, error=unmounted.stderr.strip())
        assert unmounted.returncode == 0, f"the open vault keeps the caller's {what} busy: {unmounted.stderr}"
        assert world.run("run", "taxes", "--", "true").returncode == 0
    finally:
        stick.close()


# --- item 5: the master key in gocryptfs's memory --------------------------------------


def _pidfd_getfd(pid, fd):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        got = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
        if got < 0:
            return ctypes.get_errno()
        os.close(got)
        return 0
    finally:
        os.close(pidfd)


def _attack_backend(pid):
    """What a same-user process gets from gocryptfs: {attack: "ok" | errno name}."""
    import errno

    results = {}

    def attempt(name, action):
        try:
            action()
            results[name] = "ok"
        except OSError as exc:
            results[name] = errno.errorcode.get(exc.errno, str(exc.errno))

    def read_mem():
        with open(f"/proc/{pid}/maps") as f:
            start = next(int(line.split("-")[0], 16) for line in f if " rw-p " in line)
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(start)
            assert len(mem.read(4096)) == 4096

    def getfd():
        code = _pidfd_getfd(pid, 0)
        if code:
            raise OSError(code, os.strerror(code))

    attempt("mem", read_mem)
    attempt("maps", lambda: open(f"/proc/{pid}/maps").read())
    attempt("environ", lambda: open(f"/proc/{pid}/environ", "rb").read())
    attempt("fd", lambda: os.listdir(f"/proc/{pid}/fd"))
    attempt("pidfd_getfd", getfd)
    return results


HARDENED_GOCRYPTFS = "/usr/local/libexec/nsshell/gocryptfs"  # docs/install.md


def _hardened_or_skip():
    info = os.stat(HARDENED_GOCRYPTFS) if os.path.exists(HARDENED_GOCRYPTFS) else None
    if not (info and info.st_uid == 0 and os.access(HARDENED_GOCRYPTFS, os.X_OK) and not os.access(HARDENED_GOCRYPTFS, os.R_OK)):
        reason = f"no execute-only gocryptfs at {HARDENED_GOCRYPTFS} (scripts/test installs it as root; see docs/install.md)"
        if os.environ.get("NSSHELL_REQUIRE_KERNEL") == "1":
            pytest.fail(f"NSSHELL_REQUIRE_KERNEL=1 but: {reason}")
        pytest.skip(reason)
    return HARDENED_GOCRYPTFS


@pytest.mark.parametrize("backend", ["hardened", "plain"])
def test_the_key_in_gocryptfs_is_out_of_reach_only_with_the_hardened_copy(world, backend):
    binary = _hardened_or_skip() if backend == "hardened" else PLAIN_GOCRYPTFS
    world.env["NSSHELL_GOCRYPTFS"] = binary
    world.create("taxes")
    mp = world.mountpoint("taxes")
    world.open("taxes")
    pid = state_record(world, "taxes")["backend"][0]
    results = _attack_backend(pid)
    record("gocryptfs-memory", backend=backend, **results)
    if backend == "hardened":
        assert set(results.values()) <= {"EACCES", "EPERM"}, results
    else:
        # So that the test above can fail.  Yama (where present and >= 1)
        # restricts the attach-mode two; never the /proc reads.
        with open("/proc/sys/kernel/yama/ptrace_scope") if os.path.exists("/proc/sys/kernel/yama") else open(os.devnull) as f:
            yama = f.read().strip() or "absent"
        attach_ok = yama in ("absent", "0")
        assert results == {"mem": "ok" if attach_ok else results["mem"], "maps": "ok", "environ": "ok", "fd": "ok",
                           "pidfd_getfd": "ok" if attach_ok else results["pidfd_getfd"]}, (yama, results)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0].decode() == binary
    world.inside("taxes", f"echo works > {mp}/f && cat {mp}/f")
    assert world.run("run", "taxes", "--", "cat", f"{mp}/f", check=True).stdout == "works\n"


def test_doctor_says_which_protections_are_on(monkeypatch):
    from nsshell import doctor
    from nsshell.backend import HARDENED_PATH

    monkeypatch.setenv("NSSHELL_GOCRYPTFS", PLAIN_GOCRYPTFS)
    check = doctor.check_backend_protection()
    assert check.status == "warn" and "install -o root -g root -m 0711" in check.fix and HARDENED_PATH in check.fix
    assert "gocryptfs execute-only and non-dumpable" in doctor.check_protections().detail.split("off:")[1]
    if os.path.exists(HARDENED_PATH):
        monkeypatch.setenv("NSSHELL_GOCRYPTFS", HARDENED_PATH)
        assert doctor.check_backend_protection().status == "ok"
    # Yama advice: absent, 0, 1.
    monkeypatch.setattr(doctor, "_read", lambda path: None)
    absent = doctor.check_ptrace_scope()
    assert "no Yama" in absent.detail and "sudo sysctl" not in absent.fix
    monkeypatch.setattr(doctor, "_read", lambda path: "0")
    zero = doctor.check_ptrace_scope()
    assert "sudo sysctl kernel.yama.ptrace_scope=1" in zero.fix and "does not stop /proc/PID/fd" in zero.fix
    monkeypatch.setattr(doctor, "_read", lambda path: "1")
    assert doctor.check_ptrace_scope().status == "ok"
