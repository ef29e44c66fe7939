"""Issue 12, items 8 (runtime files, the registry cache, a full runtime
directory), 9 (namespace file handles) and 10 (the terminal prompts).

All against real namespaces, real gocryptfs and a real pty, as the
unprivileged test user."""

import ctypes
import fcntl
import json
import marshal
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pexpect
import psutil
import pytest

from conftest import PASSPHRASE
from reliability import assert_one_line_error, record, wait_for

pytestmark = pytest.mark.namespaces


def _spawn(world, *args, env=None):
    return pexpect.spawn(
        world.exe, list(map(str, args)), env={**world.env, **(env or {})}, cwd=str(world.home), timeout=60,
        encoding="utf-8",
    )


def _holders_of(fragment):
    """Live nsshell holders and gocryptfs processes whose argv mentions fragment."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(fragment in arg for arg in cmdline) and ("nsshell.holder" in cmdline or cmdline[0].endswith("gocryptfs")):
            found.append(proc.pid)
    return found


# --- item 8: runtime files are never written through a planted symlink ---------------------


class Planter:
    """Keeps a symlink at path (pointing at target) for as long as it runs,
    re-planting it the moment anything removes it: a race nsshell must win."""

    def __init__(self, path, target):
        self.path, self.target = path, target
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                os.symlink(self.target, self.path)
            except FileExistsError:
                time.sleep(0.0002)
            except FileNotFoundError:  # the directory itself is not there (yet)
                time.sleep(0.001)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        if os.path.islink(self.path):
            os.unlink(self.path)


@pytest.mark.parametrize("suffix", ["state", "state.tmp", "log", "lock"])
def test_a_planted_symlink_at_a_runtime_file_is_never_written_through(vault, suffix):
    runtime = vault.runtime / "nsshell"
    runtime.mkdir(mode=0o700)
    target = vault.root / "precious"
    target.write_text("precious\n")
    with Planter(str(runtime / f"taxes.{suffix}"), str(target)):
        opened = vault.run("open", "taxes", "--passfile", vault.passfile)
    assert target.read_text() == "precious\n", "nsshell wrote through a planted symlink"
    if opened.returncode != 0:  # losing the race is allowed; a traceback or a silent failure is not
        assert_one_line_error(opened)
    vault.lock_all()
    vault.wait_until(lambda: vault.holder_pids() == [], what="the holder to exit")
    # With nothing planted any more, the vault opens as usual.
    vault.open("taxes")
    assert vault.state("taxes")["state"] == "open"
    assert target.read_text() == "precious\n"
    record("small-holes-planted-symlink", name=f"taxes.{suffix}", opened=opened.returncode == 0,
           target_untouched=True)


# --- item 8: the registry cache cannot say more than vaults.toml --------------------------------


def test_a_planted_registry_cache_cannot_change_what_a_vault_runs(vault):
    from nsshell import registry

    config = vault.home / ".config" / "nsshell" / "vaults.toml"
    raw = config.read_bytes()
    marker = vault.root / "extpass-ran"
    extpass = vault.root / "evil-extpass"
    extpass.write_text(f"#!/bin/sh\ntouch {marker}\necho '{PASSPHRASE}'\n")
    extpass.chmod(0o700)
    other_mountpoint = vault.root / "elsewhere"
    real = registry.Vault("taxes", str(vault.cipher_dir("taxes")), str(vault.mountpoint("taxes")))
    evil = registry.Vault("taxes", real.cipher_dir, str(other_mountpoint), extpass=str(extpass))
    cache_dir = vault.home / ".cache" / "nsshell"
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    planted = cache_dir / "registry.cache"
    # The key matches the registry's bytes exactly; only the rows lie.
    planted.write_bytes(marshal.dumps(((registry._CACHE_FORMAT, str(config), raw), [evil._fields()])))
    planted.chmod(0o600)
    ran = vault.run("run", "taxes", "--passfile", vault.passfile, "--", "sh", "-c", 'echo "in:$NSSHELL_MOUNTPOINT"')
    assert not marker.exists(), "nsshell ran an extpass that is not in vaults.toml"
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"in:{vault.mountpoint('taxes')}\n"
    status = json.loads(vault.run("status", "taxes", "--json", check=True).stdout)
    assert status["mountpoint"] == real.mountpoint and status["cipher_dir"] == real.cipher_dir
    assert not other_mountpoint.exists()


# --- item 8: a full runtime directory ------------------------------------------------------------


@pytest.fixture
def full_runtime(world):
    """A 256 KiB tmpfs that the test fills, used as XDG_RUNTIME_DIR.

    Unprivileged users mount a tmpfs only in a user namespace of their own;
    the host reaches it through /proc/PID/root of a process in there
    (NAMESPACE-FACTS 8), as tests/faults does for the cipher dir."""
    where = world.root / "tinyrt"
    where.mkdir()
    keeper = subprocess.Popen(
        ["unshare", "-Urm", "sh", "-c",
         f"mount -t tmpfs -o size=256k,mode=0700 tmpfs {where} && echo ready && exec sleep 900"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if keeper.stdout.readline() != "ready\n":
        keeper.kill()
        pytest.fail(f"cannot mount a tmpfs in a user namespace here: {keeper.stderr.read().strip()}")
    runtime = f"/proc/{keeper.pid}/root{where}"
    os.mkdir(f"{runtime}/nsshell", 0o700)
    filler = f"{runtime}/filler"
    for bs in ("64k", "4k", "512"):  # to the last block
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}-{bs}", f"bs={bs}"], capture_output=True)
    try:
        yield runtime
    finally:
        world.run("lock", "--all", "--force", env={"XDG_RUNTIME_DIR": runtime}, timeout=60)
        keeper.kill()
        keeper.wait()


def test_a_full_runtime_directory_is_a_one_line_error_and_nothing_is_left(world, full_runtime):
    world.create("taxes")
    env = {"XDG_RUNTIME_DIR": full_runtime}
    opened = world.run("open", "taxes", "--passfile", world.passfile, env=env)
    assert_one_line_error(opened)
    assert "No space left on device" in opened.stderr and "free some space" in opened.stderr, opened.stderr
    wait_for(lambda: _holders_of(full_runtime) == [], what="the failed holder to exit")
    assert sorted(os.listdir(f"{full_runtime}/nsshell")) == []
    assert os.listdir(world.mountpoint("taxes")) == []
    # Nothing was lost: the vault opens from a runtime directory with room.
    # (Not from this one once emptied: the keeper, in a user namespace of its
    # own, cannot bind a socket behind another namespace's /proc/PID/root.)
    ran = world.run("run", "taxes", "--passfile", world.passfile, "--", "sh", "-c", "echo $NSSHELL_VAULT")
    assert ran.returncode == 0 and ran.stdout == "taxes\n", ran.stderr
    record("small-holes-full-runtime-dir", error=opened.stderr.strip())


# --- item 10: the terminal prompts ---------------------------------------------------------------


@pytest.mark.parametrize("answer", ["taxes", "yes", ""])
def test_remove_purge_asks_on_the_terminal(vault, answer):
    cipher = vault.cipher_dir("taxes")
    child = _spawn(vault, "remove", "taxes", "--purge")
    child.expect("Type the vault name: ")
    child.sendline(answer)
    child.expect(pexpect.EOF)
    child.close()
    listed = [row["name"] for row in json.loads(vault.run("list", "--json", check=True).stdout)]
    if answer == "taxes":
        assert child.exitstatus == 0, child.before
        assert "deleted its ciphertext" in child.before
        assert not cipher.exists() and listed == []
    else:
        assert child.exitstatus == 2, child.before
        assert "not confirmed; nothing was removed" in child.before
        assert (cipher / "gocryptfs.conf").exists() and listed == ["taxes"]


def test_ctrl_c_at_the_purge_question_exits_130_and_removes_nothing(vault):
    child = _spawn(vault, "remove", "taxes", "--purge")
    child.expect("Type the vault name: ")
    child.sendintr()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130, child.before
    assert (vault.cipher_dir("taxes") / "gocryptfs.conf").exists()
    assert [row["name"] for row in json.loads(vault.run("list", "--json", check=True).stdout)] == ["taxes"]


def test_programs_the_suite_spawns_hear_ctrl_c_even_if_the_suite_was_started_ignoring_it():
    """Else the Ctrl-C tests fail under '(trap "" INT; ./scripts/test)' (conftest.py)."""
    child = pexpect.spawn("/bin/sh", ["-c", "grep SigIgn /proc/self/status"], encoding="utf-8", timeout=60)
    child.expect(pexpect.EOF)
    ignored = int(child.before.split()[-1], 16)
    assert not ignored & (1 << (signal.SIGINT - 1)), child.before


@pytest.mark.parametrize("verb", ["run", "open"])
def test_ctrl_c_at_the_passphrase_prompt_ends_the_line_and_exits_130(vault, verb):
    args = ["run", "taxes", "--", "true"] if verb == "run" else ["open", "taxes"]
    child = _spawn(vault, *args)
    child.expect("Passphrase for taxes: ")
    child.sendintr()
    child.expect(pexpect.EOF)
    after_prompt = child.before
    child.close()
    assert child.exitstatus == 130, after_prompt
    # The prompt's line is ended, and nothing claims a wrong or missing passphrase.
    assert after_prompt.startswith("\r\n"), repr(after_prompt)
    assert "passphrase" not in after_prompt and "Traceback" not in after_prompt, after_prompt
    vault.wait_until(lambda: vault.holder_pids() == [], what="the abandoned holder to exit")
    assert vault.state("taxes")["state"] == "locked"
    assert os.listdir(vault.mountpoint("taxes")) == []


# --- item 9: namespace file handles ----------------------------------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
FILEID_NSFS = 0xF1
NS_GET_MNTNS_ID = 0x8008B705  # _IOR(0xb7, 5, __u64)

# A throwaway vault keeper in miniature: a process exec'd in the initial
# namespaces that unshares, mounts a tmpfs holding a secret, goes non-dumpable
# and waits.  It tells the test its namespaces' inode numbers (which an
# attacker would have to guess as well; the scan below covers only the ids).
HOLDER = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, gid, where = os.getuid(), os.getgid(), sys.argv[1]
assert libc.unshare(0x10000000 | 0x00020000) == 0
for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
    with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
assert libc.mount(b"none", where.encode(), b"tmpfs", 0, None) == 0, ctypes.get_errno()
with open(f"{where}/secret", "w") as f:
    f.write("only-inside\n")
mnt, user = os.stat("/proc/self/ns/mnt").st_ino, os.stat("/proc/self/ns/user").st_ino
assert libc.prctl(4, 0, 0, 0, 0) == 0
print(mnt, user, flush=True)
sys.stdin.read()
"""


def _nsfs_handle(ns_id, ns_type, inum):
    """struct file_handle for nsfs (include/linux/exportfs.h, fs/nsfs.c): u64 id, u32 type, u32 inode."""
    return ctypes.create_string_buffer(struct.pack("IiQII", 16, FILEID_NSFS, ns_id, ns_type, inum))


def _namespace_id_made_now_on(cpu):
    """The id of a mount namespace made just now on this CPU."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.sched_setaffinity(0, {cpu})
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
                fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)
                raw = bytearray(8)
                fcntl.ioctl(fd, NS_GET_MNTNS_ID, raw)
                os.write(write_end, raw)
        finally:
            os._exit(0)
    os.close(write_end)
    raw = os.read(read_end, 8)
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(raw) == 8, f"could not make a mount namespace on CPU {cpu} to learn the newest namespace id"
    return struct.unpack("Q", raw)[0]


def _newest_namespace_id():
    """An id at least as high as that of every namespace made before the call.

    The kernel hands out namespace ids (of every type, one counter) in
    batches per CPU, so ids are not in creation order across CPUs: a
    namespace made now on one CPU can have a lower id than one made earlier
    on another (seen on 6.18: 29735 on CPU 0, then 27822 on CPU 1).  A
    namespace made now on each CPU this process (and so the holders it
    starts) may run on, and the highest of their ids, bounds them all."""
    return max(_namespace_id_made_now_on(cpu) for cpu in sorted(os.sched_getaffinity(0)))


def _open_by_scanning_ids(libc, nsfs_fd, ns_type, inum, newest):
    """(fd, namespace id, attempts); fd None if no id up to newest opens it."""
    for ns_id in range(newest, 0, -1):
        fd = libc.open_by_handle_at(nsfs_fd, _nsfs_handle(ns_id, ns_type, inum), os.O_RDONLY | os.O_CLOEXEC)
        if fd >= 0:
            if os.fstat(fd).st_ino == inum:
                return fd, ns_id, newest - ns_id + 1
            os.close(fd)
    return None, None, newest


class MiniKeeper:
    """HOLDER, running; .mnt and .user are its namespaces' inode numbers."""

    def __init__(self, where):
        self.where = where
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(where)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.mnt, self.user = map(int, self.proc.stdout.readline().split())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _read_through(user_fd, mount_fd, path):
    """In a forked child: setns into both namespaces and read path."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(user_fd, CLONE_NEWUSER) == 0 and libc.setns(mount_fd, CLONE_NEWNS) == 0:
                with open(path, "rb") as f:
                    os.write(write_end, f.read())
        finally:
            os._exit(0)
    os.close(write_end)
    data = os.read(read_end, 4096)
    os.close(read_end)
    os.waitpid(pid, 0)
    return data


def test_doctor_probe_for_namespace_file_handles_agrees_with_a_direct_attack(world):
    # The probe, as doctor runs it.
    checks = json.loads(world.run("doctor", "--json").stdout)
    [probe] = [c for c in checks if c["title"] == "namespace file handles"]
    assert probe["status"] in ("ok", "warn"), probe
    assert "could not test" not in probe["detail"], probe
    doctor_says_open = probe["status"] == "warn"
    if doctor_says_open:
        assert "SECURITY.md" in probe["fix"] and "kernel" in probe["fix"], probe

    # The direct attempt, written independently: a non-dumpable holder of our
    # own, handles built by hand, namespace ids scanned from the newest down.
    where = world.root / "private"
    where.mkdir()
    with MiniKeeper(where) as holder:
        for path in (f"/proc/{holder.proc.pid}/ns/mnt", f"/proc/{holder.proc.pid}/root{where}/secret"):
            with pytest.raises(PermissionError):
                open(path, "rb")  # the front door is shut, as for a vault's keeper
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        newest = _newest_namespace_id()
        started = time.monotonic()
        mount_fd, _, tries = _open_by_scanning_ids(libc, own, CLONE_NEWNS, holder.mnt, newest)
        user_fd, _, _ = _open_by_scanning_ids(libc, own, CLONE_NEWUSER, holder.user, newest)
        elapsed = time.monotonic() - started
        secret = _read_through(user_fd, mount_fd, f"{where}/secret") if mount_fd and user_fd else b""
        for fd in (own, mount_fd, user_fd):
            if fd is not None:
                os.close(fd)
    direct_attack_worked = secret == b"only-inside\n"
    record("small-holes-nsfs-handles", kernel=os.uname().release, doctor=probe["status"],
           direct_attack=direct_attack_worked, ids_scanned=tries, seconds=round(elapsed, 4))
    assert doctor_says_open == direct_attack_worked, (probe, secret)


OTHER_USER_ATTEMPT = r"""
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
ns_id, inum = int(sys.argv[1]), int(sys.argv[2])
own = os.open("/proc/self/ns/mnt", os.O_RDONLY)
handle = ctypes.create_string_buffer(struct.pack("IiQII", 16, 0xF1, ns_id, 0x00020000, inum))
fd = libc.open_by_handle_at(own, handle, os.O_RDONLY)
print("opened" if fd >= 0 and os.fstat(fd).st_ino == inum else "refused:" + os.strerror(ctypes.get_errno()))
"""


def test_another_user_cannot_open_the_namespace_by_handle_even_knowing_it(world):
    """SECURITY.md says another uid gets nothing: it is handed the exact
    handle that opens the namespace for its owner."""
    user = os.environ.get("NSSHELL_SECOND_USER", "nobody")
    if subprocess.run(["sudo", "-n", "-u", user, "true"], capture_output=True).returncode != 0:
        pytest.skip(f"no second user to act as ('sudo -n -u {user}' is not allowed here)")
    where = world.root / "private"
    where.mkdir()
    with MiniKeeper(where) as holder:
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        mount_fd, ns_id, _ = _open_by_scanning_ids(libc, own, CLONE_NEWNS, holder.mnt, _newest_namespace_id())
        os.close(own)
        if mount_fd is None:
            pytest.skip("this kernel does not open namespaces by handle even for their owner; nothing to compare")
        os.close(mount_fd)
        other = subprocess.run(["sudo", "-n", "-u", user, "/usr/bin/python3", "-c", OTHER_USER_ATTEMPT, str(ns_id),
                                str(holder.mnt)], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert other.stdout.startswith("refused:"), other.stdout
    record("small-holes-nsfs-handles-other-user", result=other.stdout.strip())
