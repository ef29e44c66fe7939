"""Shared fixtures: a private HOME/XDG world per test, the real nsshell CLI,
and an honest skip when the kernel cannot do what a test needs.

Namespace tests need: an unprivileged user (root hides permission bugs),
unprivileged user namespaces, a usable /dev/fuse and gocryptfs.  Where one is
missing they skip with the reason -- unless NSSHELL_REQUIRE_KERNEL=1 (CI sets
it), where the same condition fails the test, so CI can never pass by
skipping.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PASSPHRASE = "correct horse battery staple"

# A suite started with SIGINT ignored (a background job of a shell without job
# control, which CI may be) hands SIG_IGN on to every program it spawns, and
# the Ctrl-C tests then type ^C at programs that cannot hear it.  A user at a
# terminal has SIGINT at its default, so give every child that: catch SIGINT
# here (a caught signal is reset to SIG_DFL by exec, an ignored one stays
# ignored).  This covers every pexpect, pty and subprocess child of the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def nsshell_executable():
    """The nsshell console script of the environment running the tests."""
    candidate = Path(sys.executable).parent / "nsshell"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("nsshell")
    if found:
        return found
    pytest.fail("the nsshell console script is not installed in this environment (pip install -e .)")


def kernel_problem():
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() == 0:
        return "running as root hides permission bugs; run the suite as an unprivileged user (scripts/test does)"
    if not shutil.which("gocryptfs"):
        return "gocryptfs is not installed (apt install gocryptfs)"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is missing or not accessible to this user"
    from nsshell import doctor

    check = doctor.check_user_namespaces()
    if check.status != "ok":
        return f"this kernel refuses unprivileged namespaces with FUSE: {check.detail}"
    return None


def need_program(program):
    """The program's path (a name on PATH, or an absolute path); skip
    without it, but fail where CI promised it (NSSHELL_REQUIRE_KERNEL=1:
    scripts/lib.sh installs it)."""
    path = shutil.which(program) or (program if os.path.isabs(program) and os.path.exists(program) else None)
    if not path:
        if os.environ.get("NSSHELL_REQUIRE_KERNEL") == "1":
            pytest.fail(f"{program} is not installed, and NSSHELL_REQUIRE_KERNEL=1 (CI installs it: scripts/lib.sh)")
        pytest.skip(f"{program} is not installed")
    return path


_KERNEL_PROBLEM = "unknown"


def require_kernel():
    global _KERNEL_PROBLEM
    if _KERNEL_PROBLEM == "unknown":
        _KERNEL_PROBLEM = kernel_problem()
    if _KERNEL_PROBLEM:
        if os.environ.get("NSSHELL_REQUIRE_KERNEL") == "1":
            pytest.fail(f"NSSHELL_REQUIRE_KERNEL=1 but: {_KERNEL_PROBLEM}")
        pytest.skip(_KERNEL_PROBLEM)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "namespaces" in item.keywords or "shells" in item.keywords:
            item.add_marker(pytest.mark.usefixtures("_kernel_required"))


@pytest.fixture
def _kernel_required():
    require_kernel()


@pytest.fixture(autouse=True)
def _fresh_process_state():
    """Tests that call nsshell in-process (badinput, units) may read a
    passphrase, which makes this process non-dumpable with a core limit of 0,
    as it does every nsshell process; a real nsshell exits or execs right
    after.  Undo it between tests, so that later forks here (the namespace
    probe, which must write its uid_map) start as a fresh nsshell would."""
    yield
    from nsshell import kernel

    kernel.restore_core_limit()
    kernel.make_dumpable_again()


class World:
    """One test's private HOME and XDG directories, and ways to run nsshell in them.

    Paths are kept short (under /tmp) because unix socket paths are limited
    to 108 bytes and pytest's tmp_path can be long."""

    def __init__(self, root):
        self.root = Path(root)
        self.home = self.root / "h"
        self.runtime = self.root / "r"
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        self.passfile = self.root / "pass"
        self.passfile.write_text(PASSPHRASE + "\n")
        self.passfile.chmod(0o600)
        self.exe = nsshell_executable()
        self.env = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "PATH": f"{Path(self.exe).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "test"),
            "SHELL": "/bin/sh",
            "TERM": "dumb",
            "NO_COLOR": "1",
        }

    def run(self, *args, input=None, check=False, timeout=120, cwd=None, env=None):
        """Run nsshell; returns CompletedProcess with text stdout/stderr."""
        result = subprocess.run(
            [self.exe, *map(str, args)],
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **(env or {})},
            cwd=cwd or self.home,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"nsshell {' '.join(map(str, args))} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def create(self, name="taxes", *extra):
        self.run("create", name, "--passfile", self.passfile, *extra, check=True)
        return self.mountpoint(name)

    def mountpoint(self, name):
        return self.home / "Vaults" / name

    def cipher_dir(self, name):
        return self.home / ".local" / "share" / "nsshell" / "vaults" / name

    def inside(self, name, script, check=True, **kw):
        """sh -c script inside the vault (unlocking with the passfile)."""
        return self.run("run", name, "--passfile", self.passfile, "--", "sh", "-c", script, check=check, **kw)

    def open(self, name="taxes"):
        self.run("open", name, "--passfile", self.passfile, check=True)

    def state(self, name):
        import json

        rows = json.loads(self.run("list", "--json", check=True).stdout)
        return {row["name"]: row for row in rows}[name]

    def runtime_files(self):
        directory = self.runtime / "nsshell"
        return sorted(p.name for p in directory.iterdir()) if directory.exists() else []

    def holder_pids(self):
        """pids of this world's holders (supervisor, keeper) and gocryptfs processes.

        Holders carry their runtime dir in argv; gocryptfs its cipher dir."""
        import psutil

        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if "nsshell.holder" in cmdline and str(self.runtime / "nsshell") in cmdline:
                found.append(proc.pid)
            elif cmdline and cmdline[0].endswith("gocryptfs") and any(str(self.home) in a for a in cmdline):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc.pid)
        return sorted(found)

    def wait_until(self, predicate, timeout=15.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def lock_all(self):
        self.run("lock", "--all", "--force", timeout=60)


@pytest.fixture
def world():
    root = tempfile.mkdtemp(prefix="nst", dir="/tmp")
    w = World(root)
    try:
        yield w
    finally:
        try:
            w.lock_all()
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def vault(world):
    """A created (locked) vault named 'taxes'."""
    require_kernel()
    world.create("taxes")
    return world
