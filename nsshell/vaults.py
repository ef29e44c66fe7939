"""Vault-level operations behind create, list, status, ps and remove.

Results are plain dicts (ready for --json); the CLI decides how to show them.
"""

import os
import shutil

from nsshell import paths, registry, unlock
from nsshell.backend import BACKEND
from nsshell.errors import BUSY, CONFLICT, USAGE, NsshellError
from nsshell.names import check_name


def _absolute(path):
    return os.path.abspath(os.path.expanduser(path))


def _inside(child, parent):
    return paths.is_under(os.path.realpath(child), os.path.realpath(parent))


def create(name, source, cipher_dir=None, mountpoint=None):
    """Make a new gocryptfs directory and register it.  On any failure,
    remove exactly what this call created, and leave the registry as it was."""
    check_name(name)
    existing = registry.load()
    if name in existing:
        raise NsshellError(f"a vault named {name!r} already exists; pick another name", CONFLICT)
    cipher_dir = _absolute(cipher_dir) if cipher_dir else paths.default_cipher_dir(name)
    mountpoint = _absolute(mountpoint) if mountpoint else paths.default_mountpoint(name)
    _check_places(existing, cipher_dir, mountpoint)
    if os.path.exists(cipher_dir) and (not os.path.isdir(cipher_dir) or os.listdir(cipher_dir)):
        raise NsshellError(f"cipher dir {cipher_dir} exists and is not empty; choose an empty or new directory", CONFLICT)
    BACKEND.binary()
    passphrase = source.read(name, confirm=True)

    made = []
    try:
        for path in (cipher_dir, mountpoint):
            made.extend(_makedirs(path))
        BACKEND.initialise(cipher_dir, passphrase)
        return _seal_and_register(name, cipher_dir, mountpoint)
    except BaseException:
        if os.path.isdir(cipher_dir) and cipher_dir in made:
            shutil.rmtree(cipher_dir, ignore_errors=True)
        _remove_empty_dirs(made)
        raise


def _seal_and_register(name, cipher_dir, mountpoint):
    """The last steps of create and add: seal the bare mountpoint (nothing
    may be written there), then record the vault."""
    unlock.seal_mountpoint(mountpoint)
    vault = registry.Vault(name=name, cipher_dir=cipher_dir, mountpoint=mountpoint)
    registry.add(vault)
    return vault


def _remove_empty_dirs(made):
    """Undo _makedirs: the directories it made, deepest first, if still empty."""
    for path in reversed(made):
        try:
            os.rmdir(path)
        except OSError:
            pass


def _check_places(existing, cipher_dir, mountpoint):
    """Where a new or adopted vault may live: apart from each other and from other vaults."""
    for label, path in (("cipher dir", cipher_dir), ("mountpoint", mountpoint)):
        if "\n" in path:
            raise NsshellError(f"the {label} path cannot contain a newline", USAGE)
    if _inside(mountpoint, cipher_dir) or _inside(cipher_dir, mountpoint):
        raise NsshellError("the mountpoint and the cipher dir must not be inside each other; choose separate directories", USAGE)
    for other in existing.values():
        if _inside(mountpoint, other.mountpoint) or _inside(other.mountpoint, mountpoint):
            raise NsshellError(f"mountpoint {mountpoint} overlaps vault {other.name!r}'s; choose another with --mountpoint DIR", CONFLICT)
        if os.path.realpath(cipher_dir) == os.path.realpath(other.cipher_dir):
            raise NsshellError(f"cipher dir {cipher_dir} already belongs to vault {other.name!r}", CONFLICT)
    if os.path.exists(mountpoint) and (not os.path.isdir(mountpoint) or os.listdir(mountpoint)):
        raise NsshellError(f"mountpoint {mountpoint} exists and is not an empty directory; choose another with --mountpoint DIR", CONFLICT)
    if os.path.lexists(mountpoint):
        unlock.check_mountpoint_is_safe(mountpoint)  # ours, and nobody else can write there


def adopt(name, source, cipher_dir, mountpoint=None):
    """Register an existing gocryptfs directory (synced from another machine,
    or left by 'remove'), once its passphrase is shown to open it.  Nothing in
    the cipher dir is changed; on failure the registry is as it was."""
    from nsshell import passwd

    check_name(name)
    existing = registry.load()
    if name in existing:
        raise NsshellError(f"a vault named {name!r} already exists; pick another name", CONFLICT)
    cipher_dir = _absolute(cipher_dir)
    mountpoint = _absolute(mountpoint) if mountpoint else paths.default_mountpoint(name)
    if not os.path.isdir(cipher_dir):
        raise NsshellError(f"cipher dir {cipher_dir} does not exist or is not a directory", USAGE)
    if not BACKEND.is_cipher_dir(cipher_dir):
        raise NsshellError(
            f"{cipher_dir} has no gocryptfs.conf, so it is not a gocryptfs directory; "
            "to make a new vault use 'nsshell create'",
            USAGE,
        )
    _check_places(existing, cipher_dir, mountpoint)
    BACKEND.binary()
    passwd.check(cipher_dir, source.read(name))
    made = _makedirs(mountpoint)
    try:
        return _seal_and_register(name, cipher_dir, mountpoint)
    except BaseException:
        _remove_empty_dirs(made)
        raise


def _makedirs(path):
    """mkdir -p with 0700 for new directories; returns those it made, outermost first.

    Another nsshell (a parallel create) may make a parent such as ~/Vaults
    between the check and the mkdir: then it is theirs, not ours to remove
    on failure.  The vault's own directory appearing meanwhile is a conflict."""
    missing = []
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if directory == missing[0] or not os.path.isdir(directory):
                raise NsshellError(
                    f"{directory} was created by something else meanwhile; check what it is, then try again", CONFLICT
                ) from None
            continue
        made.append(directory)
    return made


def describe(vault, status=None):
    row = {
        "name": vault.name,
        "state": "locked",
        "sessions": 0,
        "mountpoint": vault.mountpoint,
        "cipher_dir": vault.cipher_dir,
    }
    if status is not None:
        row["state"] = status.get("state", "open")
        row["sessions"] = len(status.get("sessions", []))
    return row


def overview(only=None, detail=False):
    vaults = registry.load()
    registry.sync_names(vaults)
    rows = []
    base = paths.runtime_dir()
    for name in sorted(vaults):
        if only and name != only:
            continue
        vault = vaults[name]
        status = None
        if os.path.exists(paths.socket_path(name, base)):
            status = unlock.holder_status(name, base)
        row = describe(vault, status)
        if status is None and unlock.holder_alive(name, base):
            row["state"] = "locking"  # socket gone, holder still unmounting and cleaning up
        warning = bare_mountpoint_warning(vault.mountpoint)
        if warning:
            row["warning"] = warning
        if detail:
            row["linger"] = vault.linger
            row["history"] = vault.history
            row["lock_on"] = list(vault.lock_on)
            row["idle_lock"] = vault.idle_lock
            row["keyring"] = vault.keyring
            row["hold"] = bool(status and status.get("hold"))
            row["session_pids"] = (status or {}).get("sessions", [])
            row["error"] = (status or {}).get("error")
            row["service_pids"] = (status or {}).get("services", [])  # the private bus and what it started
            vault.defaults = getattr(vaults, "defaults", {})
            row["settings"] = vault.context()  # as configured (docs/context.md)
            row["context"] = (status or {}).get("context")  # what the keeper set up, while open
            row["dbus"] = (status or {}).get("dbus") or row["settings"]["dbus"]  # in effect while open
        rows.append(row)
    return rows


def bare_mountpoint_warning(mountpoint):
    """What is wrong with the bare mountpoint (outside the vault), or None.

    Files there were written outside the vault: they are plaintext on disk."""
    try:
        if os.path.ismount(mountpoint):
            return None  # run inside a vault: we see the vault, not the bare directory
        entries = os.listdir(mountpoint)
    except FileNotFoundError:
        return None  # created at the next unlock
    except OSError as exc:
        return f"the mountpoint {mountpoint} cannot be listed ({exc.strerror}); check it"
    if not entries:
        return None
    count = len(entries)
    return (
        f"{count} file{'s' if count != 1 else ''} in the bare mountpoint {mountpoint} "
        "(outside the vault, not encrypted): move them into the vault"
    )


def processes(name):
    """The processes that can see the vault, or None if it is locked.  The
    holder finds them by namespace identity: "session" for what sessions run
    (they keep the vault open), "service" for the vault's private bus and
    what it started (they do not: nsshell.sessionbus)."""
    status = unlock.holder_status(name)
    if status is None:
        return None
    import psutil

    found = []
    for kind, pids in (("session", status.get("members", [])), ("service", status.get("services", []))):
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                command = " ".join(proc.cmdline()) or proc.name()
                short = proc.name()  # what the process calls itself: "tmux: server"
            except psutil.Error:
                continue
            found.append({"pid": pid, "command": command, "name": short, "kind": kind})
    return found


def remove(name, purge=False, assume_yes=False):
    check_name(name)
    vault = registry.get(name)
    if unlock.holder_status(name) is not None:
        raise NsshellError(f"vault {name!r} is open; lock it first (nsshell lock {name})", BUSY)
    if purge and not assume_yes:
        from nsshell.passphrase import prompt_line

        answer = prompt_line(f"Delete the ciphertext of {name!r} in {vault.cipher_dir} for good? Type the vault name: ")
        if answer != name:
            raise NsshellError("not confirmed; nothing was removed", USAGE)
    registry.remove(name)
    if purge:
        shutil.rmtree(vault.cipher_dir, ignore_errors=True)
    try:
        os.rmdir(vault.mountpoint)  # only if empty: an empty ~/Vaults/NAME left behind is clutter
    except OSError:
        pass
    return vault
