"""Where a passphrase comes from: a file, a program, or the terminal.

A passphrase is bytes that go from here straight into an AF_UNIX socket; it
is never put in argv, the environment, a file of ours, a pipe or a log.
Before one is read, this process goes non-dumpable with a core limit of 0
(kernel.keep_secrets_out_of_core_dumps): no core dump, and no other process
of the user can open our /proc/PID/fd, mem or environ.
"""

import os

from nsshell import kernel
from nsshell.errors import BAD_PASSPHRASE, USAGE, NsshellError

EXTPASS_LIMIT = 65536


class PassphraseSource:
    """How to obtain the passphrase for one vault.

    passfile: path whose first line is the passphrase ('-' for stdin), the
    gocryptfs convention.  extpass: a program that prints the passphrase
    (read_extpass).  Otherwise: the terminal.
    """

    def __init__(self, passfile=None, extpass=None, keyring=False):
        self.passfile = passfile
        self.extpass = extpass
        # keyring: try the Secret Service first (the vault has an entry there,
        # 'nsshell keyring add'), then the terminal.  Only the unlock path of
        # such a vault sets it, so secretstorage stays off every other path.
        self.keyring = keyring
        self._keyring_used = False

    @property
    def interactive(self):
        return self.passfile is None and self.extpass is None

    def read(self, name, confirm=False):
        kernel.keep_secrets_out_of_core_dumps()
        if self.passfile is not None:
            return read_passfile(self.passfile)
        if self.extpass is not None:
            return read_extpass(self.extpass)
        if self.keyring and not confirm:
            if not self._keyring_used:
                self._keyring_used = True
                from nsshell import keyring

                try:
                    return keyring.lookup(name)
                except keyring.KeyringUnavailable as exc:
                    os.write(2, f"nsshell: {exc}; asking for the passphrase instead\n".encode())
            else:
                os.write(
                    2,
                    f"nsshell: the passphrase in the keyring did not open vault {name!r}; after this, "
                    f"update it with 'nsshell keyring add {name}'\n".encode(),
                )
                self.keyring = False
        return prompt(f"{'New passphrase' if confirm else 'Passphrase'} for {name}: ", confirm=confirm)


def read_extpass(program):
    """Run program and take the first line it prints as the passphrase.

    What gocryptfs -extpass does (split on spaces, no shell; stdin /dev/null;
    stderr passed through), except that the program's stdout is a socket: when
    gocryptfs ran it, the passphrase crossed a pipe that any process of the
    user could open through /proc/PID/fd and read."""
    import _socket

    kernel.keep_secrets_out_of_core_dumps()
    argv = [part for part in program.split(" ") if part]
    if not argv:
        raise NsshellError("the extpass program is empty; give a program that prints the passphrase", USAGE)
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            pid = os.posix_spawnp(
                argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, theirs.fileno(), 1)]
            )
        except OSError as exc:
            raise NsshellError(f"cannot run the extpass program {argv[0]}: {exc.strerror}", BAD_PASSPHRASE) from None
        theirs.close()
        raw = b""
        while b"\n" not in raw and len(raw) <= EXTPASS_LIMIT:
            chunk = ours.recv(4096)
            if not chunk:
                break
            raw += chunk
        ours.close()
        _, status = os.waitpid(pid, 0)
    finally:
        ours.close()
        theirs.close()
        os.close(null)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise NsshellError(f"the extpass program {argv[0]} failed (exit code {code}); nothing was unlocked", BAD_PASSPHRASE)
    first = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if not first:
        raise NsshellError(f"the extpass program {argv[0]} printed no passphrase", BAD_PASSPHRASE)
    return first


def read_passfile(path):
    try:
        if path == "-":
            raw = os.read(0, 65536)
        else:
            with open(path, "rb") as f:
                raw = f.read(65536)
    except OSError as exc:
        raise NsshellError(f"cannot read passphrase file {path}: {exc.strerror}", USAGE) from None
    first = raw.split(b"\n", 1)[0].rstrip(b"\r")
    if not first:
        where = "standard input (--passfile -) gave no passphrase" if path == "-" else f"passphrase file {path} is empty"
        raise NsshellError(f"{where}; its first line must hold the passphrase", BAD_PASSPHRASE)
    return first


def prompt(text, confirm=False):
    """Ask on the controlling terminal with echo off."""
    import getpass

    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        raise NsshellError(
            "no terminal to ask for the passphrase on; use --passfile FILE (or -) or --extpass PROGRAM",
            BAD_PASSPHRASE,
        ) from None
    os.close(tty)
    try:
        first = getpass.getpass(text)
        if not first:  # say so before asking to repeat it
            raise NsshellError("the passphrase cannot be empty", BAD_PASSPHRASE)
        if confirm:
            again = getpass.getpass("Repeat to confirm: ")
            if again != first:
                raise NsshellError("the two passphrases differ; nothing was created", BAD_PASSPHRASE)
    except EOFError:
        raise NsshellError("no passphrase given", BAD_PASSPHRASE) from None
    # KeyboardInterrupt (Ctrl-C) goes on up: the CLI ends the prompt's line and exits 130.
    return first.encode()


def prompt_line(text):
    """Ask a yes/no style question on the terminal (with echo); the answer, stripped.

    Raw os calls on /dev/tty: a text-mode "r+" file object insists on being
    seekable, which a terminal is not.  Ctrl-C raises KeyboardInterrupt."""
    try:
        tty = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        raise NsshellError("no terminal to confirm on; add --yes to confirm", USAGE) from None
    try:
        os.write(tty, text.encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = os.read(tty, 1024)
            if not chunk:  # Ctrl-D: end the prompt's line for whatever is said next
                os.write(tty, b"\n")
                break
            answer += chunk
    except OSError as exc:
        raise NsshellError(f"cannot read the answer from the terminal ({exc.strerror}); add --yes to confirm", USAGE) from None
    finally:
        os.close(tty)
    return answer.decode(errors="replace").strip()
