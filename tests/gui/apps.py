"""Programs inside a vault, and what the GUI tests ask about them."""

import os
import subprocess

from .screen import wait_for


class Inside:
    """A program started with `nsshell run taxes -- ARGV` (the vault unlocks
    with the passfile if it is locked).  nsshell execs it, so the pid is
    the program's."""

    def __init__(self, world, desktop, *argv, name="taxes", env=None, stdout=subprocess.DEVNULL):
        self.proc = subprocess.Popen(
            [world.exe, "run", name, "--passfile", str(world.passfile), "--", *argv],
            env={**world.env, **(env or {})}, cwd=world.home, stdout=stdout, stderr=subprocess.DEVNULL,
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


def vault_processes(mountpoint):
    """pids of this user's processes started for the vault: sessions and
    the services its bus started both carry NSSHELL_MOUNTPOINT."""
    marker = f"NSSHELL_MOUNTPOINT={mountpoint}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def write_pdf_inside(world, path, text, scratch, name="taxes"):
    """A one-page PDF at path in the vault, made outside in scratch (the
    vault's /tmp is its own) and handed in on stdin."""
    from .pdf import write_pdf

    made = scratch / "made.pdf"
    write_pdf(made, text)
    world.run("run", name, "--passfile", world.passfile, "--", "sh", "-c", 'cat > "$1"', "sh", path,
              input=made.read_text(), check=True)
    made.unlink()


def read_inside(world, path):
    """The file's text, read inside the vault (unlocking it if it locked); "" if unreadable."""
    result = world.run("run", "taxes", "--passfile", world.passfile, "--", "cat", str(path))
    return result.stdout if result.returncode == 0 else ""
