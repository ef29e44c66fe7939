"""The encryption backend behind a vault.  Today only gocryptfs.

A backend knows how to make a new cipher directory and how to serve one
through a FUSE fd that the holder opened inside the vault's namespace.  It
receives the passphrase on a pipe (its stdin), never in argv, the
environment or a file.  Keep this interface small so that other backends
(a plain bind mount, securefs, ...) can be added beside it.
"""

import os

from nsshell.errors import BAD_PASSPHRASE, FAILURE, UNSUPPORTED, NsshellError

# gocryptfs exit codes (gocryptfs/internal/exitcodes) that users can act on.
_GOCRYPTFS_EXIT_MEANING = {
    6: "the cipher directory is not a gocryptfs directory (or cannot be read)",
    10: "the mountpoint was refused by gocryptfs",
    12: "wrong passphrase",
    22: "the passphrase is empty",
    23: "gocryptfs could not read its config file (gocryptfs.conf)",
}
WRONG_PASSPHRASE_EXIT = 12


class Gocryptfs:
    name = "gocryptfs"
    fuse_subtype = "gocryptfs"
    # What gocryptfs (go-fuse) asks for when it mounts by itself; without it
    # the kernel sends reads larger than go-fuse serves well (bench/: -14%).
    max_read = 131072

    @staticmethod
    def binary():
        found = _which("gocryptfs")
        if not found:
            raise NsshellError(
                "gocryptfs is not installed; install it with 'sudo apt install gocryptfs'", UNSUPPORTED
            )
        return found

    @staticmethod
    def is_cipher_dir(path):
        return os.path.isfile(os.path.join(path, "gocryptfs.conf"))

    def initialise(self, cipher_dir, passphrase):
        """Create a new encrypted directory; passphrase is bytes, sent on stdin."""
        import subprocess

        result = subprocess.run(
            [self.binary(), "-init", "-q", "--", cipher_dir],
            input=passphrase + b"\n",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if result.returncode != 0:
            detail = _last_line(result.stderr) or f"exit code {result.returncode}"
            raise NsshellError(f"gocryptfs could not create the vault: {detail}", FAILURE)

    def serve_argv(self, cipher_dir, fuse_fd, notify_pid):
        """argv that serves cipher_dir through an already-mounted FUSE fd.

        gocryptfs (via go-fuse) accepts /dev/fd/N as the mountpoint and then
        serves that fd without mounting anything itself.  It signals SIGUSR1
        to notify_pid once it is serving; the passphrase is read from stdin.
        """
        return [self.binary(), "-fg", "-notifypid", str(notify_pid), "--", cipher_dir, f"/dev/fd/{fuse_fd}"]

    @staticmethod
    def explain_exit(code, log_tail=""):
        """An NsshellError for a gocryptfs process that exited with code."""
        if code == WRONG_PASSPHRASE_EXIT:
            return NsshellError("wrong passphrase", BAD_PASSPHRASE)
        meaning = _GOCRYPTFS_EXIT_MEANING.get(code)
        if meaning is None:
            meaning = f"gocryptfs exited with code {code}"
            if log_tail:
                meaning += f": {log_tail}"
        return NsshellError(f"cannot unlock: {meaning}", FAILURE)

    def fsck(self, cipher_dir, passphrase):
        """Run gocryptfs -fsck; returns (exit code, output)."""
        import subprocess

        result = subprocess.run(
            [self.binary(), "-fsck", "-q", "--", cipher_dir],
            input=passphrase + b"\n",
            capture_output=True,
        )
        return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _which(program):
    """shutil.which without importing shutil (the holder starts on every unlock)."""
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = os.path.join(directory or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _last_line(raw):
    lines = [line.strip() for line in raw.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


BACKEND = Gocryptfs()
