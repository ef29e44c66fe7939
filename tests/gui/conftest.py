"""The GUI tests' desktop: Xvfb and a host session bus, real programs
outside and inside a vault (issue 11).  Missing programs skip, except under
NSSHELL_REQUIRE_KERNEL=1 (CI), where scripts/lib.sh installs them and a
missing one fails the test."""

import os
import subprocess

import pytest

from conftest import need_program, require_kernel

from .screen import GUI_PROGRAMS, Desktop, wait_for

pytestmark = pytest.mark.namespaces


@pytest.fixture
def desktop(world):
    """A created vault 'taxes' in world, and a desktop whose programs use
    world's HOME; world.env gets DISPLAY and the host bus, so that every
    nsshell command of the test runs on this desktop."""
    require_kernel()
    for program in GUI_PROGRAMS:
        need_program(program)
    world.create("taxes")
    d = Desktop(str(world.root), world.env)
    world.env = d.env
    try:
        yield d
    finally:
        try:
            world.run("lock", "--all", "--force", timeout=120)
        except Exception:
            pass
        d.stop()


class Inside:
    """A program started with `nsshell run taxes -- ARGV` (the vault unlocks
    with the passfile if it is locked).  nsshell execs it, so the pid is
    the program's."""

    def __init__(self, world, desktop, *argv, name="taxes"):
        self.proc = subprocess.Popen(
            [world.exe, "run", name, "--passfile", str(world.passfile), "--", *argv],
            env=world.env, cwd=world.home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        desktop.processes.append(self.proc)

    @property
    def pid(self):
        return self.proc.pid


def mount_ns(pid):
    return os.readlink(f"/proc/{pid}/ns/mnt")


def session_mount_ns(world, name="taxes"):
    return world.run("run", name, "--", "readlink", "/proc/self/ns/mnt", check=True).stdout.strip()


def write_inside(world, path, text, name="taxes"):
    world.run("run", name, "--passfile", world.passfile, "--", "sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, path,
              check=True)


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_locked(world, name="taxes", timeout=180):
    wait_for(lambda: world.state(name)["state"] == "locked", f"{name} to lock", timeout)
