"""The encryption backend behind a vault.  Today only gocryptfs.

A backend knows how to make a new cipher directory and how to serve one
through a FUSE fd that the holder opened inside the vault's namespace.  It
receives the passphrase on its stdin, which is one end of an AF_UNIX
socketpair: never argv, the environment, a file, or a pipe (another process
of the user can open a pipe through /proc/PID/fd/N and read it; a socket
gives ENXIO there, NAMESPACE-FACTS 20).  It runs with a scrubbed environment
(NAMESPACE-FACTS 27).  Keep this interface small so that other backends (a
plain bind mount, securefs, ...) can be added beside it.

Which gocryptfs: $NSSHELL_GOCRYPTFS if set, else the hardened copy at
HARDENED_PATH if there is one, else gocryptfs from PATH.  A copy that root
installed with mode 0711 cannot be read by the user, so the kernel makes it
non-dumpable from exec: other processes of the user can then neither read
its memory (the master key) nor its fds, nor ptrace it (NAMESPACE-FACTS 21).
"""

import os
import stat

from nsshell.errors import BAD_PASSPHRASE, FAILURE, UNSUPPORTED, NsshellError

HARDENED_PATH = "/usr/local/libexec/nsshell/gocryptfs"
OVERRIDE_VARIABLE = "NSSHELL_GOCRYPTFS"
HARDEN_COMMANDS = (
    f"sudo install -d -m 0755 {os.path.dirname(HARDENED_PATH)} && "
    f'sudo install -o root -g root -m 0711 "$(command -v gocryptfs)" {HARDENED_PATH}'
)

# What gocryptfs may inherit from the caller's environment.  Everything else
# goes: GOTRACEBACK=crash would make a SIGQUIT dump the master key, GODEBUG
# and LD_* change how it runs.
_KEPT_VARIABLES = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ"})


def backend_environment(environ=None):
    """The scrubbed environment a gocryptfs process is started with."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k in _KEPT_VARIABLES or k.startswith("LC_")}


def is_protected(path):
    """Whether the kernel will run path non-dumpable for us: we may execute
    but not read it, and only root can change it."""
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (
        info.st_uid == 0
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and os.access(path, os.X_OK)
        and not os.access(path, os.R_OK)
    )

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
        chosen = os.environ.get(OVERRIDE_VARIABLE)
        if chosen:
            if not (os.path.isabs(chosen) and os.path.isfile(chosen) and os.access(chosen, os.X_OK)):
                raise NsshellError(
                    f"{OVERRIDE_VARIABLE}={chosen} is not an executable file; give an absolute path or unset it",
                    UNSUPPORTED,
                )
            return chosen
        if os.path.isfile(HARDENED_PATH) and os.access(HARDENED_PATH, os.X_OK):
            return HARDENED_PATH
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

        result = _run_with_passphrase(
            [self.binary(), "-init", "-q", "--", cipher_dir], passphrase, stdout=subprocess.DEVNULL
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

        result = _run_with_passphrase([self.binary(), "-fsck", "-q", "--", cipher_dir], passphrase, stdout=subprocess.PIPE)
        return result.returncode, (result.stdout + result.stderr).decode(errors="replace")


def _run_with_passphrase(argv, passphrase, stdout):
    """Run gocryptfs with the passphrase waiting on its stdin socket, in a
    scrubbed environment, in /, with no fd of ours but 0, 1 and 2."""
    import _socket
    import subprocess

    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    try:
        # The socket buffer holds it until gocryptfs reads; nothing else can
        # open this socket through /proc (ENXIO).
        ours.sendall(passphrase + b"\n")
        ours.close()
        return subprocess.run(
            argv, stdin=theirs.fileno(), stdout=stdout, stderr=subprocess.PIPE, env=backend_environment(), cwd="/"
        )
    finally:
        ours.close()
        theirs.close()


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
