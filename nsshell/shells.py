"""The one table of shells nsshell integrates with, and how to start each
one inside a vault.  The rest of the core knows nothing about shells.

Shell code itself lives in real files under shell/<name>/ (shipped inside
the package as nsshell/shell/ in a wheel); ``nsshell init SHELL`` renders
them by plain token replacement.
"""

import os
import shlex
import sys
from pathlib import Path

from nsshell.errors import USAGE, NsshellError

SUPPORTED = ("bash", "zsh", "xonsh")


def shell_dir():
    """Where the shipped shell files are: inside the installed package, or
    the source checkout's top-level shell/ directory."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "shell", here.parent / "shell"):
        if candidate.is_dir():
            return candidate
    raise NsshellError("nsshell's shell files are missing from this installation; reinstall nsshell")


def kind_of(shell_path):
    """'bash', 'zsh', 'xonsh' or None, from the executable's name."""
    name = os.path.basename(shell_path)
    for kind in SUPPORTED:
        if name == kind or name.startswith(kind + "-") or name.startswith(kind + "5"):
            return kind
    return None


def user_shell():
    return os.environ.get("SHELL") or "/bin/sh"


def inner_argv(shell_path):
    """argv for an interactive shell that starts inside a vault."""
    kind = kind_of(shell_path)
    if kind == "bash":
        return [shell_path, "--rcfile", str(shell_dir() / "bash" / "inner.bashrc"), "-i"]
    if kind == "xonsh":
        return [shell_path, "-i"]
    return [shell_path, "-i"] if kind == "zsh" else [shell_path]


def inner_env(shell_path):
    """Extra environment for the inner shell (zsh: the ZDOTDIR trick)."""
    if kind_of(shell_path) == "zsh":
        env = {"ZDOTDIR": str(shell_dir() / "zsh" / "zdotdir")}
        user_zdotdir = os.environ.get("ZDOTDIR")
        env["NSSHELL_USER_ZDOTDIR"] = user_zdotdir if user_zdotdir is not None else ""
        return env
    return {}


def executable():
    """The absolute path that rendered shell code calls nsshell by."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "nsshell" and os.path.isabs(argv0):
        return argv0
    found = None
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "nsshell")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found = candidate
            break
    return os.path.abspath(found or argv0)


def render_init(shell, cmd="vault", prompt=True):
    if shell not in SUPPORTED:
        raise NsshellError(f"unsupported shell {shell!r}; choose one of: {', '.join(SUPPORTED)}", USAGE)
    if not cmd or not all(c.isalnum() or c in "_-" for c in cmd) or cmd[0] == "-":
        raise NsshellError(f"invalid function name {cmd!r} for --cmd", USAGE)
    if shell == "xonsh":
        source = shell_dir().parent / "xontrib" / "nsshell.py"
        return f"xontrib load nsshell\n"
    template = (shell_dir() / shell / f"nsshell.{shell}").read_text()
    return (
        template.replace("__NSSHELL_EXE__", shlex.quote(executable()))
        .replace("__NSSHELL_CMD__", cmd)
        .replace("__NSSHELL_PROMPT__", "1" if prompt else "0")
    )
