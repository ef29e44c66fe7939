"""Checking and changing a vault's passphrase with ``gocryptfs -passwd``.

gocryptfs reads the current passphrase and then the new one from stdin,
one line each.  Both travel over an AF_UNIX socketpair, never a pipe: a
pipe of a dumpable process can be opened through /proc/PID/fd by any
process of the user, a socket cannot (NAMESPACE-FACTS 20).  Nothing goes in
argv, the environment or a file.

Checking a passphrase without mounting anything or touching the master key:
``-passwd`` decrypts the master key with the current passphrase first (exit
12 if it is wrong), and only then reads the new one.  Given end-of-file
instead, it stops there (exit 9, "empty password") and leaves gocryptfs.conf
untouched.  One scrypt run, as slow as an unlock and no slower.
"""

from nsshell.backend import BACKEND, WRONG_PASSPHRASE_EXIT
from nsshell.errors import BAD_PASSPHRASE, FAILURE, NsshellError

NO_NEW_PASSWORD_EXIT = 9  # gocryptfs/internal/exitcodes ReadPassword: the current one was right


def _passwd(cipher_dir, lines):
    """Run gocryptfs -passwd with lines on a socket as stdin; (exit code, last stderr line)."""
    import socket
    import subprocess

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [BACKEND.binary(), "-passwd", "-q", "--", cipher_dir],
            stdin=theirs,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
        )
        theirs.close()
        try:
            ours.sendall(b"".join(line + b"\n" for line in lines))
        except BrokenPipeError:
            pass  # it stopped early; its exit code says why
        ours.shutdown(socket.SHUT_WR)
        _, err = proc.communicate()
    finally:
        theirs.close()
        ours.close()
    text = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
    return proc.returncode, (text[-1] if text else "")


def check(cipher_dir, passphrase):
    """Raise NsshellError(BAD_PASSPHRASE) unless passphrase opens cipher_dir."""
    code, detail = _passwd(cipher_dir, [passphrase])
    if code == NO_NEW_PASSWORD_EXIT:
        return
    if code == WRONG_PASSPHRASE_EXIT:
        raise NsshellError(f"wrong passphrase for {cipher_dir}", BAD_PASSPHRASE)
    raise NsshellError(f"cannot check the passphrase of {cipher_dir}: {detail or f'gocryptfs exit code {code}'}", FAILURE)


def change(cipher_dir, old, new):
    """Re-encrypt the master key in gocryptfs.conf with the new passphrase."""
    if not new:
        raise NsshellError("the new passphrase cannot be empty", BAD_PASSPHRASE)
    code, detail = _passwd(cipher_dir, [old, new])
    if code == 0:
        return
    if code == WRONG_PASSPHRASE_EXIT:
        raise NsshellError("wrong current passphrase; nothing was changed", BAD_PASSPHRASE)
    raise NsshellError(
        f"gocryptfs could not change the passphrase: {detail or f'exit code {code}'}; nothing was changed", FAILURE
    )

