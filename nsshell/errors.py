"""Exit codes and the one exception type the CLI turns into a one-line error.

Exit codes are part of the interface: scripts and the shell integrations
branch on them.  ``run`` and ``enter`` otherwise exit with the command's own
status, like env(1); 126/127 mean the command could not be started.
exit_code_of() is where a command's errors become that line and code.
"""

import sys

OK = 0
FAILURE = 1  # something went wrong that fits no finer code
USAGE = 2  # bad arguments (argparse uses 2 as well)
NOT_FOUND = 3  # no vault by that name
BAD_PASSPHRASE = 4  # wrong passphrase, or none could be read
UNSUPPORTED = 5  # this machine lacks something: user namespaces, /dev/fuse, gocryptfs
BUSY = 6  # sessions still run, or the vault is in use in a way that blocks the request
CONFLICT = 7  # the request contradicts existing state (name taken, mountpoint not empty, ...)
UNSAFE = 8  # a file or directory nsshell relies on has the wrong owner, type or mode
CANNOT_EXECUTE = 126
COMMAND_NOT_FOUND = 127


class NsshellError(Exception):
    """An error the user can act on: ``message`` says what happened and what to do."""

    def __init__(self, message, code=FAILURE):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):
        return self.message


# Between the holder and its clients an error travels as one line,
# "ERR <code> <message>": written by to_line, read back by from_line.


def to_line(exc):
    """The protocol line for an error (any exception; its code if it has one)."""
    code = getattr(exc, "code", FAILURE)
    return f"ERR {code} {exc}".replace("\n", " ").encode() + b"\n"


def from_line(text):
    """The NsshellError that an "ERR <code> <message>" line describes."""
    _, code, message = (text.split(" ", 2) + ["", ""])[:3]
    return NsshellError(message, int(code) if code.isdigit() else FAILURE)


def report(message):
    """The one line every error ends as: "nsshell: <message>" on stderr."""
    sys.stderr.write(f"nsshell: {message}\n")


def exit_code_of(action):
    """Run a command's action() and return its exit status, turning an
    NsshellError into its one line and code, Ctrl-C into 130, and a reader
    of stdout that went away (`nsshell doctor | head -2`) into a quiet
    SIGPIPE status, as cat(1) does."""
    try:
        try:
            code = action()
        except SystemExit:  # argparse's --help and --version exit from inside
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
        return code
    except NsshellError as exc:
        report(exc.message)
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # Only for stdout: a broken socket stays an error.
        if not _stdout_reader_gone():
            raise
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + 13  # SIGPIPE


def _stdout_reader_gone():
    import select

    poller = select.poll()
    poller.register(sys.stdout.fileno(), 0)
    return any(events & select.POLLERR for _, events in poller.poll(0))
