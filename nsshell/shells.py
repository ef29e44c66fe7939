"""The one table of shells nsshell integrates with, and how to start each
one inside a vault.  The rest of the core knows nothing about shells.

Shell code itself lives in real files under shell/<name>/ (shipped inside
the package as nsshell/shell/ in a wheel); ``nsshell init SHELL`` renders
them by plain token replacement.
"""

import sys

from nsshell import lightos
from nsshell.errors import USAGE, NsshellError

SUPPORTED = ("bash", "zsh", "xonsh")


def shell_dir():
    """Where the shipped shell files are: inside the installed package, or
    the source checkout's top-level shell/ directory."""
    # lightos, not pathlib or os: this runs on every `vault enter`.  The
    # real path only when the package is reached through a symbolic link.
    for here in (lightos.dirname(lightos.abspath(__file__)), None):
        if here is None:
            import os

            here = os.path.dirname(os.path.realpath(__file__))
        for candidate in (lightos.join(here, "shell"), lightos.join(lightos.dirname(here), "shell")):
            if lightos.isdir(candidate):
                return candidate
    raise NsshellError("nsshell's shell files are missing from this installation; reinstall nsshell")


def kind_of(shell_path):
    """'bash', 'zsh', 'xonsh' or None, from the executable's name."""
    name = lightos.basename(shell_path)
    for kind in SUPPORTED:
        if name == kind or name.startswith(kind + "-") or name.startswith(kind + "5"):
            return kind
    return None


def user_shell():
    return lightos.getenv("SHELL") or "/bin/sh"


def inner_argv(shell_path):
    """argv for an interactive shell that starts inside a vault."""
    kind = kind_of(shell_path)
    if kind == "bash":
        return [shell_path, "--rcfile", lightos.join(shell_dir(), "bash", "inner.bashrc"), "-i"]
    if kind == "xonsh":
        return [shell_path, "-i"]
    return [shell_path, "-i"] if kind == "zsh" else [shell_path]


def inner_env(shell_path):
    """Extra environment for the inner shell (zsh: the ZDOTDIR trick)."""
    if kind_of(shell_path) == "zsh":
        env = {"ZDOTDIR": lightos.join(shell_dir(), "zsh", "zdotdir")}
        user_zdotdir = lightos.getenv("ZDOTDIR")
        env["NSSHELL_USER_ZDOTDIR"] = user_zdotdir if user_zdotdir is not None else ""
        return env
    if kind_of(shell_path) == "xonsh":
        # The outer xonsh exports its own history file, which the inner one
        # would append to.  Start with history off; the xontrib (loaded by
        # the rc or autoload) points it into the vault and restores this
        # backend.  Without the xontrib nothing is recorded, nothing leaks.
        outer = lightos.getenv("XONSH_HISTORY_BACKEND") or "json"
        return {"XONSH_HISTORY_BACKEND": "dummy", "NSSHELL_XONSH_HISTORY_BACKEND": outer}
    return {}


def executable():
    """The absolute path of the nsshell command (bin/nsshell)."""
    import os

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.isabs(argv0) and os.path.basename(argv0) in ("nsshell", "nsshell-python"):
        launcher = os.path.join(os.path.dirname(argv0), "nsshell")
        if os.access(launcher, os.X_OK):
            return launcher
    beside_python = os.path.join(os.path.dirname(sys.executable), "nsshell")
    if os.path.isfile(beside_python) and os.access(beside_python, os.X_OK):
        return beside_python  # python -m nsshell, or nsshell imported by a test
    found = None
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(directory, "nsshell")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            found = candidate
            break
    return os.path.abspath(found or argv0)


def command_words():
    """The words rendered shell code runs nsshell by.  When this process is
    bin/nsshell-python started with -S by bin/nsshell and found nsshell
    without the site module, the same interpreter line again: that skips
    bin/nsshell's /bin/sh at every `vault` command.  Otherwise the nsshell
    command's absolute path, so that PATH is not searched either way."""
    import os

    script = sys.argv[0] if sys.argv else ""
    if (
        sys.flags.no_site
        and "site" not in sys.modules
        and os.path.isabs(script)
        and os.path.basename(script) == "nsshell-python"
    ):
        return [sys.executable, "-S", script]
    return [executable()]


_XONSH_INIT = """\
# nsshell for xonsh, rendered by `nsshell init xonsh`.  In ~/.xonshrc:
#   execx($(nsshell init xonsh), 'exec', __xonsh__.ctx, filename='nsshell')
# (for when xonsh cannot import nsshell, e.g. pipx); otherwise simply
#   xontrib load nsshell
def __nsshell_init(xsh):
    import importlib.machinery, sys, types
    loaded = sys.modules.get("xontrib.nsshell")
    if getattr(loaded, "_active", None) is not None:
        return  # loaded already, by 'xontrib load' or autoload
    module = types.ModuleType("xontrib.nsshell")
    module.__spec__ = importlib.machinery.ModuleSpec("xontrib.nsshell", None, origin=__NSSHELL_ORIGIN__)
    exec(compile(__NSSHELL_SOURCE__, __NSSHELL_ORIGIN__, "exec"), module.__dict__)
    module.NSSHELL_EXE = __NSSHELL_EXE__
    module.ALIAS = __NSSHELL_CMD__
    module.ADD_PROMPT = __NSSHELL_PROMPT__
    sys.modules["xontrib.nsshell"] = module  # so 'xontrib unload nsshell' works
    module._load_xontrib_(xsh)
__nsshell_init(__xonsh__)
del __nsshell_init
"""


def _render_xonsh(cmd, prompt):
    """Self-contained code for xonsh's execx: the xontrib's source plus the
    absolute path of this nsshell (the zoxide pattern)."""
    from pathlib import Path

    source = Path(__file__).resolve().parent.parent / "xontrib" / "nsshell.py"
    return (
        _XONSH_INIT.replace("__NSSHELL_ORIGIN__", repr(str(source)))
        .replace("__NSSHELL_EXE__", repr(executable()))
        .replace("__NSSHELL_CMD__", repr(cmd))
        .replace("__NSSHELL_PROMPT__", repr(bool(prompt)))
        .replace("__NSSHELL_SOURCE__", repr(source.read_text()))  # last: never scanned for tokens
    )


def template_path(shell):
    return lightos.join(shell_dir(), shell, f"nsshell.{shell}")


def cache_path(shell, cmd="vault", prompt=True):
    """The file the README's rc line sources; its name follows the options.

    Found the way that line finds it, ${XDG_CACHE_HOME:-$HOME/.cache}, not
    through nsshell.paths.cache_dir: inside a vault XDG_CACHE_HOME is the
    vault's own (nsshell.stateenv.gui_state_env), so shells started there
    source, and `nsshell init` refreshes, the vault's copy.  Written to the
    host's cache instead, it was never found inside, and every shell a
    `vault enter` started paid a Python start for the eval."""
    from nsshell import paths

    value = lightos.getenv("XDG_CACHE_HOME", "")
    base = value if lightos.isabs(value) else lightos.join(paths.home(), ".cache")
    suffix = ("" if cmd == "vault" else f"-{cmd}") + ("" if prompt else "-noprompt")
    return lightos.join(base, "nsshell", f"init{suffix}.{shell}")


def rc_line(shell, cmd="vault", prompt=True):
    """The line for ~/.bashrc or ~/.zshrc: source the cached code while it
    is fresh, else start nsshell (which writes the cache anew)."""
    import os

    options = ("" if cmd == "vault" else f" --cmd {cmd}") + ("" if prompt else " --no-prompt")
    name = os.path.basename(cache_path(shell, cmd, prompt))
    return f'. "${{XDG_CACHE_HOME:-$HOME/.cache}}/nsshell/{name}" 2>/dev/null || eval "$(nsshell init {shell}{options})"'


_GUARD = """\
# Written by `nsshell init {shell}` (nsshell {version}) for this line in your rc file:
#   {rc_line}
# Stale as soon as nsshell's own copy of this code is newer than this file
# (an upgrade) or gone: then `return 1` makes that line fall back to the
# eval, which writes this file anew.  A freshness check with no process.
[[ -f {template} && ! {template} -nt {cache} && -x {exe} ]] || return 1

"""


def write_cache(shell, code, cmd="vault", prompt=True):
    """Save code, behind a freshness guard, where rc_line() sources it.
    Written to a temporary file and renamed, so a shell starting meanwhile
    sources the old file or the new one, never half of one."""
    import os

    import shlex

    from nsshell import __version__

    path = cache_path(shell, cmd, prompt)
    directory = os.path.dirname(path)
    guard = _GUARD.format(
        shell=shell,
        version=__version__,
        rc_line=rc_line(shell, cmd, prompt),
        template=shlex.quote(template_path(shell)),
        cache=shlex.quote(path),
        exe=shlex.quote(command_words()[0]),
    )
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # The last line tells the rc line's || that sourcing succeeded.
            f.write(guard + code + "\nreturn 0\n")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def render_init(shell, cmd="vault", prompt=True):
    if shell not in SUPPORTED:
        raise NsshellError(f"unsupported shell {shell!r}; choose one of: {', '.join(SUPPORTED)}", USAGE)
    if not cmd or not all(c.isalnum() or c in "_-" for c in cmd) or cmd[0] == "-":
        raise NsshellError(f"invalid function name {cmd!r} for --cmd", USAGE)
    if shell == "xonsh":
        return _render_xonsh(cmd, prompt)
    import shlex

    with open(template_path(shell), encoding="utf-8") as f:
        template = f.read()
    return (
        template.replace("__NSSHELL_EXE__", " ".join(map(shlex.quote, command_words())))
        .replace("__NSSHELL_CMD__", cmd)
        .replace("__NSSHELL_PROMPT__", "1" if prompt else "0")
    )
