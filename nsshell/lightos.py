"""What the hot path of ``nsshell run`` and ``enter`` needs of os and
os.path, built on the interpreter's built-in ``posix`` module.

Importing os (and _collections_abc, which it loads) costs about 2.5 ms on
the machines we measure: more than everything else ``nsshell run`` does on
an open vault, and the difference between meeting and missing issue 13's
goal (docs/benchmarks.md).  So the modules on that path (cli, inside,
client, kernel, paths, shells, names, errors) import posix and this module,
never os at module level; code off the path imports os where it needs it.
tests/test_hot_path_imports.py keeps it so.

The helpers follow os and posixpath for what nsshell passes them: str
paths, or path-like objects that give one.
"""

import posix
import sys

_ENCODING = sys.getfilesystemencoding()
_decoded_environ = None


def fsencode(path):
    path = posix.fspath(path)
    return path if isinstance(path, bytes) else path.encode(_ENCODING, "surrogateescape")


def fsdecode(raw):
    return raw if isinstance(raw, str) else raw.decode(_ENCODING, "surrogateescape")


def environ():
    """The process's environment as str: os.environ itself once any code
    has imported os (it may have been changed through it since), else a
    decoded copy of posix.environ, made once (nothing can change that copy
    without os but posix.putenv, which nsshell never calls)."""
    global _decoded_environ
    os = sys.modules.get("os")
    if os is not None:
        return os.environ
    if _decoded_environ is None:
        _decoded_environ = {fsdecode(key): fsdecode(value) for key, value in posix.environ.items()}
    return _decoded_environ


def getenv(name, default=None):
    return environ().get(name, default)


# --- os.path, for str paths ------------------------------------------------------------------


def join(first, *rest):
    path = posix.fspath(first)
    for part in map(posix.fspath, rest):
        if part.startswith("/"):
            path = part
        elif not path or path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def dirname(path):
    path = posix.fspath(path)
    head = path[: path.rfind("/") + 1]
    if head and head != "/" * len(head):
        head = head.rstrip("/")
    return head


def basename(path):
    return posix.fspath(path).rpartition("/")[2]


def isabs(path):
    return posix.fspath(path).startswith("/")


def abspath(path):
    path = posix.fspath(path)
    if not isabs(path):
        path = join(posix.getcwd(), path)
    return normpath(path)


def normpath(path):
    """posixpath.normpath for an absolute path."""
    if not path:
        return "."
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts) if path.startswith("/") else "/".join(parts) or "."


def _file_type(path):
    """The S_IFMT bits of what path leads to, or None if nothing is there."""
    try:
        return posix.stat(path).st_mode & 0o170000
    except (OSError, ValueError):
        return None


def exists(path):
    return _file_type(path) is not None


def isdir(path):
    return _file_type(path) == 0o040000


# --- exec with a PATH search (os.execvpe) ----------------------------------------------------

DEFPATH = "/bin:/usr/bin"  # os.defpath


def execvpe(file, args, env):
    """os.execvpe: exec file, searched on env's PATH when it has no slash.
    Raises the first error that is not "no such file" (as os does), else
    FileNotFoundError."""
    raw_env = {fsencode(key): fsencode(value) for key, value in env.items()}
    if "/" in file:
        posix.execve(file, args, raw_env)
    first_error = None
    for directory in (env.get("PATH") or DEFPATH).split(":"):
        try:
            posix.execve(join(directory or ".", file), args, raw_env)
        except OSError as exc:
            last = exc
            if first_error is None and not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                first_error = exc
    raise first_error if first_error is not None else last
