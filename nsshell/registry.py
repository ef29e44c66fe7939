"""The vault registry: $XDG_CONFIG_HOME/nsshell/vaults.toml.

Read with tomllib; written by a small serializer (the format is ours and
flat), atomically (temp file, fsync, rename) under a lock on the config
directory, so a crash or a racing command never leaves half a file.

A registry that does not parse, has a wrong type or a key we do not know is
an error that names the file, the vault and the key; nsshell never rewrites
a registry it could not read, so nothing in it is lost.
"""

import fcntl
import marshal
import os
import stat

from nsshell import paths
from nsshell.errors import CONFLICT, NOT_FOUND, NsshellError
from nsshell.names import name_problem

CONFIG_ERROR = 1
HISTORY_CHOICES = ("vault", "off", "outer")
LOCK_TRIGGERS = ("suspend", "screen-lock", "logout")  # what lock_on may name (see nsshell.autolock)
# The context keys (docs/context.md): allowed per vault and in [defaults].
CONTEXT_KEYS = ("private", "hide", "offline", "private_tmp", "keep_tmp", "dbus")
# dbus: the vault's own session bus, the host's, or none (nsshell.sessionbus, docs/gui.md).
DBUS_CHOICES = ("vault", "host", "none")


class Vault:
    """One registry entry.  A plain class rather than a dataclass: the
    dataclasses module pulls in inspect, and this is on the unlock path."""

    FIELDS = (
        "name", "cipher_dir", "mountpoint", "linger", "extpass", "history", "lock_on", "idle_lock", "keyring",
        *CONTEXT_KEYS,
    )
    __slots__ = (*FIELDS, "defaults")

    def __init__(
        self, name, cipher_dir, mountpoint, linger=0, extpass=None, history="vault",
        lock_on=LOCK_TRIGGERS, idle_lock=0, keyring=False,
        private=(), hide=(), offline=None, private_tmp=None, keep_tmp=None, dbus=None,
    ):
        self.name = name
        self.cipher_dir = cipher_dir
        self.mountpoint = mountpoint
        self.linger = linger  # seconds the vault stays open after its last session ends
        self.extpass = extpass  # program that prints the passphrase (gocryptfs -extpass)
        self.history = history  # where inner shells keep history: in the vault, nowhere, or as outside
        self.lock_on = tuple(lock_on)  # desktop events that lock the vault (nsshell.autolock)
        self.idle_lock = idle_lock  # seconds without file activity before it locks; 0: never
        self.keyring = keyring  # whether 'nsshell keyring add' stored its passphrase in the Secret Service
        # The vault's context (docs/context.md); None: as the registry's [defaults] say.
        self.private = tuple(private)  # more paths under HOME whose state stays in the vault
        self.hide = tuple(hide)  # host paths covered by an empty read-only layer inside
        self.offline = offline  # own network namespace, loopback only
        self.private_tmp = private_tmp  # /tmp and /var/tmp of its own
        self.keep_tmp = keep_tmp  # that private /tmp kept in the vault instead of memory
        self.dbus = dbus  # session bus for its sessions: "vault", "host" or "none"
        self.defaults = {}  # the registry's [defaults] table, set by get()

    def _fields(self):
        return tuple(getattr(self, field) for field in self.FIELDS)

    def context(self):
        """The context settings in effect: the vault's own over [defaults];
        lists add up (defaults first)."""
        d = self.defaults
        own = {"offline": self.offline, "private_tmp": self.private_tmp, "keep_tmp": self.keep_tmp}
        settings = {key: bool(d.get(key, fallback)) if own[key] is None else own[key]
                    for key, fallback in (("offline", False), ("private_tmp", True), ("keep_tmp", False))}
        settings["private"] = [*d.get("private", ()), *self.private]
        settings["hide"] = [*d.get("hide", ()), *self.hide]
        settings["dbus"] = self.dbus or d.get("dbus", "vault")
        return settings

    def __eq__(self, other):
        return isinstance(other, Vault) and self._fields() == other._fields()

    def __repr__(self):
        return "Vault(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS) + ")"

    def to_toml(self):
        lines = [f"[vaults.{self.name}]"]
        lines.append(f"cipher_dir = {_toml_string(self.cipher_dir)}")
        lines.append(f"mountpoint = {_toml_string(self.mountpoint)}")
        lines.append(f"linger = {int(self.linger)}")
        if self.extpass is not None:
            lines.append(f"extpass = {_toml_string(self.extpass)}")
        lines.append(f"history = {_toml_string(self.history)}")
        if self.lock_on != LOCK_TRIGGERS:
            lines.append("lock_on = [" + ", ".join(_toml_string(t) for t in self.lock_on) + "]")
        if self.idle_lock:
            lines.append(f"idle_lock = {int(self.idle_lock)}")
        if self.keyring:
            lines.append("keyring = true")
        lines += _context_toml(self._fields()[-len(CONTEXT_KEYS):])
        return "\n".join(lines) + "\n"


def _context_toml(values):
    lines = []
    for key, value in zip(CONTEXT_KEYS, values):
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, str):
            lines.append(f"{key} = {_toml_string(value)}")
        elif value:
            lines.append(f"{key} = [" + ", ".join(_toml_string(v) for v in value) + "]")
    return lines


_FIELD_TYPES = {
    "cipher_dir": str,
    "mountpoint": str,
    "linger": (int, str),
    "extpass": str,
    "history": str,
    "lock_on": (list, tuple),  # a list in TOML; the cache keeps the tuple
    "idle_lock": (int, str),
    "keyring": bool,
    "private": list,
    "hide": list,
    "offline": bool,
    "private_tmp": bool,
    "keep_tmp": bool,
    "dbus": str,
}
_REQUIRED = ("cipher_dir", "mountpoint")


def _toml_string(value):
    out = ['"']
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def parse_duration(value):
    """Seconds from an int or a string like '90', '30s', '5m', '2h'."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string such as '30s', '5m', '1h'")
    if isinstance(value, int):
        seconds = value
    else:
        text = str(value).strip().lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        scale = 1
        if text and text[-1] in units:
            scale = units[text[-1]]
            text = text[:-1]
        if not text.isdigit():
            raise ValueError(f"{value!r} is not a duration; use seconds or a string such as '30s', '5m', '1h'")
        seconds = int(text) * scale
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _problem(path, message):
    return NsshellError(f"{path}: {message}; fix the file (or move it aside) and try again", CONFIG_ERROR)


def load(path=None):
    """All vaults, by name.  A missing registry is an empty one."""
    path = path or paths.registry_file()
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise NsshellError(f"cannot read {path}: {exc.strerror}", CONFIG_ERROR) from None
    cached = _cached(path, raw)
    if cached is not None:
        return cached
    vaults = _parse(path, raw)
    _remember(path, raw, vaults)
    return vaults


def _parse(path, raw):
    import tomllib

    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _problem(path, "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise _problem(path, f"is not valid TOML ({exc})") from None
    unknown = set(document) - {"vaults", "defaults"}
    if unknown:
        raise _problem(path, f"unknown top-level key {sorted(unknown)[0]!r}")
    tables = document.get("vaults", {})
    if not isinstance(tables, dict):
        raise _problem(path, "'vaults' must be a table of vaults")
    vaults = Vaults((name, _vault_from_table(path, name, table)) for name, table in tables.items())
    vaults.defaults = _defaults_from_table(path, document.get("defaults", {}))
    return vaults


class Vaults(dict):
    """name -> Vault, and the registry's [defaults] table (context keys)."""

    defaults = {}


def _defaults_from_table(path, table):
    if not isinstance(table, dict):
        raise _problem(path, "'defaults' must be a table")
    for key, value in table.items():
        if key not in CONTEXT_KEYS:
            raise _problem(path, f"[defaults] has an unknown key {key!r} (allowed: {', '.join(CONTEXT_KEYS)})")
        _check_context_value(path, "[defaults]", key, value)
    return dict(table)


def _check_context_value(path, where, key, value):
    if not isinstance(value, _FIELD_TYPES[key]):
        raise _problem(path, f"{where}: {key} has the wrong type ({type(value).__name__})")
    if key == "dbus" and value not in DBUS_CHOICES:
        raise _problem(path, f"{where}: dbus must be one of {', '.join(map(repr, DBUS_CHOICES))}, not {value!r}")
    if isinstance(value, list):
        for entry in value:
            problem = context_path_problem(key, entry)
            if problem:
                raise _problem(path, f"{where}: {key}: {problem}")


def context_path_problem(key, entry):
    """Why entry cannot be in a private or hide list, or None."""
    if not isinstance(entry, str):
        return f"{entry!r} is not a string"
    if "\n" in entry or "\0" in entry or "/../" in entry + "/" or entry.rstrip("/") in ("~", ""):
        return f"{entry!r} is not a usable path"
    if key == "private" and not entry.startswith("~/"):
        return f"{entry!r} must start with '~/' (state is kept per path under HOME)"
    if key == "hide" and not (entry.startswith("~/") or (entry.startswith("/") and entry.rstrip("/"))):
        return f"{entry!r} must be absolute or start with '~/'"
    return None


# Importing tomllib costs more than everything else an unlock does in
# Python, so the parsed registry is kept in $XDG_CACHE_HOME/nsshell, keyed by
# the registry's exact bytes: any edit, however quick, misses the cache.
#
# The cache is trusted no further than the TOML: a cached registry is used
# only if it passes the same checks as a parsed one *and* nsshell's own
# rendering of it is, byte for byte, the registry file.  So a planted or
# stale cache can never name an extpass, cipher dir or mountpoint that
# vaults.toml does not.  (A hand-formatted registry is parsed every time.)


_CACHE_FORMAT = 5  # bump when Vault's fields or the cache's checks change


def _cache_file():
    return os.path.join(paths.cache_dir(), "registry.cache")


def _cached(path, raw):
    try:
        fd = os.open(_cache_file(), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        with os.fdopen(fd, "rb") as f:
            fd = None
            key, rows, defaults = marshal.loads(f.read(1 << 20))
        if key != (_CACHE_FORMAT, path, raw):
            return None
        vaults = Vaults()
        for row in rows:
            fields = dict(zip(Vault.FIELDS, row, strict=True))
            name = fields.pop("name")
            table = {
                field: list(value) if isinstance(value, tuple) else value
                for field, value in fields.items()
                if value is not None
            }
            vaults[name] = _vault_from_table(path, name, table)
        vaults.defaults = _defaults_from_table(path, defaults)
        if _render(vaults).encode("utf-8") != raw:
            return None
        return vaults
    except (OSError, ValueError, EOFError, TypeError, AttributeError, NsshellError):
        return None  # missing, corrupt, planted or from another version: parse instead
    finally:
        if fd is not None:
            os.close(fd)


def _remember(path, raw, vaults):
    try:
        if _render(vaults).encode("utf-8") != raw:
            return  # not in nsshell's own form: _cached would refuse it anyway
        directory = paths.cache_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        tmp = os.path.join(directory, f"registry.cache.{os.getpid()}")
        fd = paths.create_private_file(tmp)
        with os.fdopen(fd, "wb") as f:
            rows = [v._fields() for v in vaults.values()]
            f.write(marshal.dumps(((_CACHE_FORMAT, path, raw), rows, getattr(vaults, "defaults", {}))))
        os.replace(tmp, _cache_file())
    except OSError:
        pass  # only a cache: the next command parses again


def _vault_from_table(path, name, table):
    problem = name_problem(name)
    if problem:
        raise _problem(path, f"vault {name!r} has an invalid name ({problem})")
    if not isinstance(table, dict):
        raise _problem(path, f"vault {name!r} must be a table")
    for key, value in table.items():
        if key not in _FIELD_TYPES:
            raise _problem(path, f"vault {name!r} has an unknown key {key!r}")
        if not isinstance(value, _FIELD_TYPES[key]) or (isinstance(value, bool) and _FIELD_TYPES[key] is not bool):
            raise _problem(path, f"vault {name!r}: {key} has the wrong type ({type(value).__name__})")
        if key in CONTEXT_KEYS:
            _check_context_value(path, f"vault {name!r}", key, value)
    for key in _REQUIRED:
        if key not in table:
            raise _problem(path, f"vault {name!r} has no {key}")
        if not os.path.isabs(table[key]) or "\n" in table[key] or "\0" in table[key]:
            raise _problem(path, f"vault {name!r}: {key} must be an absolute path on one line")
    try:
        linger = parse_duration(table.get("linger", 0))
    except ValueError as exc:
        raise _problem(path, f"vault {name!r}: linger: {exc}") from None
    history = table.get("history", "vault")
    if history not in HISTORY_CHOICES:
        raise _problem(path, f"vault {name!r}: history must be one of {', '.join(HISTORY_CHOICES)}")
    lock_on = table.get("lock_on", list(LOCK_TRIGGERS))
    for trigger in lock_on:
        if trigger not in LOCK_TRIGGERS:
            raise _problem(
                path, f"vault {name!r}: lock_on may hold only {', '.join(map(repr, LOCK_TRIGGERS))} (or be [] for none)"
            )
    try:
        idle_lock = parse_duration(table.get("idle_lock", 0))
    except ValueError as exc:
        raise _problem(path, f"vault {name!r}: idle_lock: {exc}") from None
    return Vault(
        name=name,
        cipher_dir=table["cipher_dir"],
        mountpoint=table["mountpoint"],
        linger=linger,
        extpass=table.get("extpass"),
        history=history,
        lock_on=tuple(dict.fromkeys(lock_on)),
        idle_lock=idle_lock,
        keyring=table.get("keyring", False),
        private=table.get("private", ()),
        hide=table.get("hide", ()),
        offline=table.get("offline"),
        private_tmp=table.get("private_tmp"),
        keep_tmp=table.get("keep_tmp"),
        dbus=table.get("dbus"),
    )


def get(name, path=None):
    vaults = load(path)
    try:
        vault = vaults[name]
    except KeyError:
        known = ", ".join(sorted(vaults)) or "none yet"
        if name_problem(name):
            # Not a name any vault can have: do not suggest creating it, and
            # never echo it raw (a newline in it would split the error line).
            raise NsshellError(f"no vault named {name!r} (known: {known}): {name_problem(name)}", NOT_FOUND) from None
        import difflib  # an error path only

        close = difflib.get_close_matches(name, list(vaults), n=1, cutoff=0.6)
        if close:
            raise NsshellError(
                f"no vault named {name!r}; did you mean {close[0]!r}? (known: {known})", NOT_FOUND
            ) from None
        raise NsshellError(
            f"no vault named {name!r} (known: {known}); create it with 'nsshell create {name}'", NOT_FOUND
        ) from None
    vault.defaults = getattr(vaults, "defaults", {})
    return vault


class _Locked:
    """flock on the config directory: one writer of the registry at a time."""

    def __enter__(self):
        directory = paths.config_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


_HEADER = (
    "# nsshell vault registry; 'nsshell create' and 'nsshell remove' maintain it.\n"
    "# Per vault: cipher_dir, mountpoint, linger (seconds or '5m'), extpass, history (vault|off|outer),\n"
    "# lock_on (default [\"suspend\", \"screen-lock\", \"logout\"]), idle_lock ('30m'; 0: never), keyring.\n"
    "# and its context (docs/context.md): private, hide, offline, private_tmp, keep_tmp.\n"
    "# [defaults] holds context keys for every vault.\n"
)


def _render(vaults):
    """The registry's text as nsshell writes it."""
    text = _HEADER
    defaults = getattr(vaults, "defaults", {})
    if defaults:
        text += "\n[defaults]\n" + "\n".join(_context_toml([defaults.get(k) for k in CONTEXT_KEYS])) + "\n"
    return text + "".join("\n" + vault.to_toml() for _, vault in sorted(vaults.items()))


def _write(vaults, path):
    text = _render(vaults)
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = paths.create_private_file(tmp)
    try:
        os.write(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_names(vaults)


def names_dir():
    """One empty file per vault name, so shell completion can list names
    with a glob: no process, no TOML parsing."""
    return os.path.join(paths.config_dir(), "names")


def sync_names(vaults):
    directory = names_dir()
    try:
        present = set(os.listdir(directory))
    except FileNotFoundError:
        present = set()
    if present == set(vaults):
        return
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in set(vaults) - present:
        os.close(os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for name in present - set(vaults):
        try:
            os.unlink(os.path.join(directory, name))
        except OSError:
            pass


def add(vault, path=None):
    path = path or paths.registry_file()
    with _Locked():
        vaults = load(path)
        if vault.name in vaults:
            raise NsshellError(f"a vault named {vault.name!r} already exists; pick another name", CONFLICT)
        vaults[vault.name] = vault
        _write(vaults, path)


def remove(name, path=None):
    path = path or paths.registry_file()
    with _Locked():
        vaults = load(path)
        if name not in vaults:
            raise NsshellError(f"no vault named {name!r}", NOT_FOUND)
        del vaults[name]
        _write(vaults, path)


def update(name, path=None, **fields):
    """Change fields of one vault in place (e.g. keyring = True); returns the new entry."""
    path = path or paths.registry_file()
    with _Locked():
        vaults = load(path)
        if name not in vaults:
            raise NsshellError(f"no vault named {name!r}", NOT_FOUND)
        vault = vaults[name]
        for field, value in fields.items():
            setattr(vault, field, value)
        _write(vaults, path)
    return vault
