"""What a vault name may be.

Names become file names in the runtime directory, TOML keys and prompt text,
so they are kept to a set of characters that is safe in all three without
quoting: a letter or digit, then letters, digits, '.', '_' or '-'.
"""

from nsshell.errors import USAGE, NsshellError

MAX_NAME_BYTES = 64
_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_REST = _FIRST | frozenset("._-")


def name_problem(name):
    """Why name is not a valid vault name, or None when it is."""
    if not name:
        return "a vault name cannot be empty"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"a vault name can be at most {MAX_NAME_BYTES} bytes long"
    if name[0] not in _FIRST:
        return "a vault name must start with a letter or a digit"
    if not all(c in _REST for c in name):
        return "a vault name may contain only letters, digits, '.', '_' and '-'"
    return None


def check_name(name):
    """Return name, or raise a usage error that quotes it safely."""
    problem = name_problem(name)
    if problem:
        raise NsshellError(f"invalid vault name {name!r}: {problem}", USAGE)
    return name
