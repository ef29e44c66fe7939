"""Where nsshell keeps things, following the XDG base directory spec.

- registry:  $XDG_CONFIG_HOME/nsshell/vaults.toml   (~/.config/nsshell)
- ciphertext: $XDG_DATA_HOME/nsshell/vaults/NAME    (~/.local/share/nsshell)
- runtime:   $XDG_RUNTIME_DIR/nsshell/              (sockets, locks, state)
- cache:     $XDG_CACHE_HOME/nsshell/                (the parsed registry)

The runtime directory is where a holder's control socket lives, so it is
checked on every use: a directory (not a symlink), owned by us, mode 0700.
Without XDG_RUNTIME_DIR we fall back to $TMPDIR/nsshell-UID (or /tmp), which
anyone could have created first; the same checks catch that.

Imported on the hot path: only built-in modules and nsshell.lightos, not os.
"""

import posix
import stat

from nsshell import lightos
from nsshell.errors import FAILURE, UNSAFE, NsshellError


def home():
    return lightos.getenv("HOME") or _home_from_passwd()


def _home_from_passwd():
    import os

    return os.path.expanduser("~")


def _xdg(variable, default_below_home):
    # Inside a vault, sessions have the XDG data, cache and state homes
    # pointed into the vault (nsshell.stateenv.gui_state_env); nsshell's own
    # files stay where the host keeps them.
    value = lightos.getenv("NSSHELL_HOST_" + variable) or lightos.getenv(variable, "")
    # The spec says relative paths are invalid and must be ignored.
    if value and lightos.isabs(value):
        return value
    return lightos.join(home(), default_below_home)


def config_dir():
    return lightos.join(_xdg("XDG_CONFIG_HOME", ".config"), "nsshell")


def data_dir():
    return lightos.join(_xdg("XDG_DATA_HOME", ".local/share"), "nsshell")


def cache_dir():
    return lightos.join(_xdg("XDG_CACHE_HOME", ".cache"), "nsshell")


def registry_file():
    return lightos.join(config_dir(), "vaults.toml")


def default_cipher_dir(name):
    return lightos.join(data_dir(), "vaults", name)


def default_mountpoint(name):
    return lightos.join(home(), "Vaults", name)


def is_under(path, directory):
    """Whether path is directory or lies below it (by name: no symlinks followed)."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def runtime_base():
    value = lightos.getenv("XDG_RUNTIME_DIR", "")
    if value and lightos.isabs(value):
        return lightos.join(value, "nsshell")
    tmp = lightos.getenv("TMPDIR", "")
    if not (tmp and lightos.isabs(tmp)):
        tmp = "/tmp"
    return lightos.join(tmp, f"nsshell-{posix.getuid()}")


def runtime_dir(create=True):
    """The checked private runtime directory.  Raises NsshellError(UNSAFE) if
    it exists with the wrong type, owner or mode; FileNotFoundError if it does
    not exist and create is false."""
    path = runtime_base()
    try:
        info = posix.lstat(path)
    except FileNotFoundError:
        if not create:
            raise
        parent = lightos.dirname(path)
        try:
            if not lightos.isdir(parent):
                import os

                os.makedirs(parent, mode=0o700, exist_ok=True)
            try:
                posix.mkdir(path, 0o700)
            except FileExistsError:
                pass  # a racing nsshell made it; checked below like any other
            info = posix.lstat(path)
        except OSError as exc:
            raise NsshellError(
                f"cannot create the runtime directory {path} ({exc.strerror}); "
                "set XDG_RUNTIME_DIR to a private directory you own",
                UNSAFE,
            ) from None
    check_private_dir(path, info)
    return path


def check_private_dir(path, info=None):
    """Refuse a directory that someone else could have planted or can read."""
    if info is None:
        info = posix.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise NsshellError(f"{path} is a symbolic link, which nsshell refuses to use; remove it and try again", UNSAFE)
    if not stat.S_ISDIR(info.st_mode):
        raise NsshellError(f"{path} is not a directory; remove it and try again", UNSAFE)
    if info.st_uid != posix.getuid():
        raise NsshellError(
            f"{path} belongs to uid {info.st_uid}, not to you; someone else created it, so nsshell will not use it "
            "(set XDG_RUNTIME_DIR to a private directory, or have the owner remove it)",
            UNSAFE,
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise NsshellError(
            f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be private: run 'chmod 700 {path}'", UNSAFE
        )


def socket_path(name, base=None):
    return lightos.join(base or runtime_base(), f"{name}.sock")


def state_path(name, base=None):
    return lightos.join(base or runtime_base(), f"{name}.state")


def lock_path(name, base=None):
    return lightos.join(base or runtime_base(), f"{name}.lock")


def log_path(name, base=None):
    return lightos.join(base or runtime_base(), f"{name}.log")


def dconf_host_view(name, base=None):
    """Where, inside the vault's namespace, the host's dconf directory is
    seen read-only (nsshell.plan); on the host an empty directory."""
    return lightos.join(base or runtime_base(), f"{name}.dconf")


def bus_dir(name, base=None):
    """The directory of the vault's private session bus (nsshell.sessionbus).
    On the host it stays an empty directory; inside the vault's namespace a
    tmpfs of the keeper's covers it and holds the bus socket."""
    return lightos.join(base or runtime_base(), f"{name}.bus")


def bus_address(name, base=None):
    """DBUS_SESSION_BUS_ADDRESS of the vault's private bus (a path, never an
    abstract socket: the path exists only inside the vault's namespace)."""
    path = lightos.join(bus_dir(name, base), "bus")
    # D-Bus address values escape every byte but these as %XX.
    safe = b"-_/.*0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "unix:path=" + "".join(chr(b) if b in safe else f"%{b:02x}" for b in lightos.fsencode(path))


def create_private_file(path):
    """A new, empty 0600 file at path, opened for writing (O_CLOEXEC).

    Whatever was at path is unlinked first (unlink never follows a symlink),
    and the file is created with O_EXCL|O_NOFOLLOW: a symlink or file planted
    there, even in a race, is never written through.  Raises OSError."""
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass
    return posix.open(path, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL | posix.O_NOFOLLOW | posix.O_CLOEXEC, 0o600)


def runtime_file_error(path, exc):
    """The one-line NsshellError for an OSError while writing a runtime file."""
    import errno

    directory = lightos.dirname(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return NsshellError(
            f"{directory} is full ({exc.strerror}), so nsshell cannot write {lightos.basename(path)} there; "
            "free some space there and try again",
            FAILURE,
        )
    if exc.errno in (errno.EEXIST, errno.ELOOP):
        return NsshellError(
            f"{path} is a symbolic link or was re-created by another process, and nsshell never writes "
            "through one; remove it, check what writes into that directory, and try again",
            UNSAFE,
        )
    return NsshellError(f"cannot write {path} ({exc.strerror}); check {directory} and try again", FAILURE)
