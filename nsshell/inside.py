"""Running a command inside a vault: the hot path of ``nsshell run`` and
``enter``.

Join the open vault through nsshell.client (or open it through
nsshell.unlock first, imported only then), chdir back, set the
environment that keeps tool state and temporary files in the vault, exec.
This module sits above both, so neither imports the other.  It imports
only built-in modules (posix, not os: nsshell.lightos says why), sys and the
light nsshell modules: keep it that way.
"""

import posix
import sys

from nsshell import client, kernel, lightos, paths
from nsshell.errors import CANNOT_EXECUTE, COMMAND_NOT_FOUND, FAILURE, USAGE, NsshellError
from nsshell.names import check_name

# Programs that honour an environment variable for their history or state
# file: pointed at the vault's copy, <mountpoint>/.nsshell/home/<file>, which
# is the same file the keeper binds over ~/<file> when that exists on the
# host (nsshell.plan).  The variable reaches the file even when the host has
# none, where a bind mount cannot (docs/context.md).
TOOL_STATE_ENV = (
    ("LESSHISTFILE", ".lesshst"),
    ("SQLITE_HISTORY", ".sqlite_history"),
    ("PYTHON_HISTORY", ".python_history"),  # Python 3.13+; older ones: PYTHONSTARTUP below
    ("NODE_REPL_HISTORY", ".node_repl_history"),
    ("PSQL_HISTORY", ".psql_history"),
    ("MYSQL_HISTFILE", ".mysql_history"),
    ("REDISCLI_HISTFILE", ".rediscli_history"),
    ("GDBHISTFILE", ".gdb_history"),
    ("OCTAVE_HISTFILE", ".octave_hist"),
)
# GUI state (issue 11; measured in docs/gui.md): where the XDG base
# directories for data, cache and state point inside a vault.  Programs of
# every toolkit write their recent files, autosaves, thumbnails, per-document
# data and databases there, under names no list can keep up with; inside, all
# of it lands in the vault's copy of HOME, <mountpoint>/.nsshell/home/, the
# same tree the shadowed paths live in.  XDG_CONFIG_HOME is left alone: it is
# where settings are read from (themes, fonts, shells' rc files, nsshell's
# own registry).  The host's values are kept as NSSHELL_HOST_*, for nsshell
# itself (nsshell.paths) and for a `run` started from inside.
GUI_STATE_XDG = (
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_CACHE_HOME", ".cache"),
    ("XDG_STATE_HOME", ".local/state"),
)
DCONF_PROFILE_NAME = "dconf-profile"  # in <mountpoint>/.nsshell, written by the keeper (nsshell.plan)

# A user who switched a history off keeps it off.
_OFF_VALUES = ("-", "/dev/null", "")


def shadow_home(mountpoint):
    """Where the vault keeps its copies of files under HOME."""
    return lightos.join(mountpoint, ".nsshell", "home")


def tool_state_env(env, mountpoint, private_tmp):
    """Point tool state and temporary files into the vault (env is changed)."""
    home = shadow_home(mountpoint)
    for variable, name in TOOL_STATE_ENV:
        current = env.get(variable)
        if current is None or current not in _OFF_VALUES:
            env[variable] = lightos.join(home, name)
    # Python before 3.13 has no PYTHON_HISTORY: a startup file that
    # nsshell ships moves the REPL's history, then runs the user's own.
    outer = env.get("NSSHELL_OUTER_PYTHONSTARTUP", env.get("PYTHONSTARTUP", ""))
    env["NSSHELL_OUTER_PYTHONSTARTUP"] = outer
    env["PYTHONSTARTUP"] = lightos.join(lightos.dirname(__file__), "python_startup.py")
    # vim and neovim: no variable names the viminfo/shada file, but VIMINIT
    # runs first; then the user's own vimrc (which VIMINIT replaces) is read.
    viminfo = lightos.join(home, ".viminfo").replace("\\", "\\\\").replace(" ", "\\ ").replace("|", "\\|")
    user_init = env.get("NSSHELL_OUTER_VIMINIT", env.get("VIMINIT"))
    env["NSSHELL_OUTER_VIMINIT"] = user_init or ""
    env["VIMINIT"] = f"set viminfofile={viminfo} | " + (
        user_init
        or "if has('nvim') | exe 'runtime! init.vim' | elseif filereadable(expand('~/.vimrc')) | source ~/.vimrc"
        " | elseif filereadable(expand('~/.vim/vimrc')) | source ~/.vim/vimrc"
        " | else | source $VIMRUNTIME/defaults.vim | endif"
    )
    if private_tmp:
        # Terminal multiplexers: a server started inside is the vault's own
        # (its socket in the private /tmp), and nothing inside can reach a
        # server outside, which would open its windows outside the vault.
        # screen keeps its sockets in /run/screen, not /tmp: move it too.
        for variable in ("TMUX", "TMUX_PANE", "STY"):
            if variable in env:
                env["NSSHELL_OUTER_" + variable] = env.pop(variable)
        env["TMUX_TMPDIR"] = "/tmp"
        env["SCREENDIR"] = "/tmp/.screen"
        # ... and a request that would still reach one outside (a start-up
        # file that sets TMUX_TMPDIR again, tmux -S, or simply no server
        # inside) gets one line from nsshell's tmux and screen wrappers.
        wrappers = _wrapper_dir()
        if wrappers:
            search = env.get("PATH", lightos.DEFPATH)
            if wrappers not in search.split(":"):
                env["PATH"] = f"{wrappers}:{search}"
        # Temporary files go to the vault's private /tmp, not to wherever
        # TMPDIR pointed outside (systemd's PrivateTmp does the same).  Even
        # a TMPDIR below /tmp may be a directory the keeper let through.
        tmpdir = env.get("TMPDIR")
        if tmpdir and tmpdir.rstrip("/") not in ("/tmp", "/var/tmp") and not paths.is_under(tmpdir, mountpoint):
            env["TMPDIR"] = "/tmp"


def gui_state_env(env, mountpoint):
    """Point the XDG data, cache and state homes into the vault (env is
    changed), keep the host's data home readable through XDG_DATA_DIRS
    (the user's themes, icons, .desktop files and MIME types), and use the
    vault's dconf profile when the keeper wrote one (settings written inside
    go to the vault's database, the host's are read)."""
    home = env.get("HOME") or "/nonexistent"
    vault_home = shadow_home(mountpoint)
    for variable, below_home in GUI_STATE_XDG:
        host = env.get("NSSHELL_HOST_" + variable)
        if not host:
            value = env.get(variable, "")
            host = value if lightos.isabs(value) else lightos.join(home, below_home)
            env["NSSHELL_HOST_" + variable] = host
        env[variable] = lightos.join(vault_home, below_home)
    data_dirs = env.get("NSSHELL_HOST_XDG_DATA_DIRS")
    if data_dirs is None:
        data_dirs = env["NSSHELL_HOST_XDG_DATA_DIRS"] = env.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share"
    env["XDG_DATA_DIRS"] = env["NSSHELL_HOST_XDG_DATA_HOME"] + ":" + data_dirs
    profile = lightos.join(mountpoint, ".nsshell", DCONF_PROFILE_NAME)
    if lightos.exists(profile):
        env["DCONF_PROFILE"] = profile


def session_bus_env(env, bus, name, base):
    """DBUS_SESSION_BUS_ADDRESS for the vault's setting (nsshell.sessionbus):
    its own bus, shared by its sessions; none at all; or the host's as it was."""
    if bus == "vault":
        env["DBUS_SESSION_BUS_ADDRESS"] = paths.bus_address(name, base)
    elif bus == "none":
        env["DBUS_SESSION_BUS_ADDRESS"] = "disabled:"


def _wrapper_dir():
    """shell/inside-bin: in the installed package, or in the source checkout."""
    here = lightos.dirname(lightos.abspath(__file__))
    for candidate in (lightos.join(here, "shell", "inside-bin"), lightos.join(lightos.dirname(here), "shell", "inside-bin")):
        if lightos.isdir(candidate):
            return candidate
    return None


def _tmp_identity():
    try:
        info = posix.stat("/tmp")
        return info.st_dev, info.st_ino
    except OSError:
        return None


def run(name, command, source=None, hide=()):
    """`nsshell run NAME -- COMMAND`: exec command inside the vault (opening
    it first if needed).  Returns only by raising."""
    if not command:
        raise NsshellError("nothing to run: give a command after '--', e.g. nsshell run NAME -- ls", USAGE)
    exec_inside(name, command, passphrase_source=source, hide=hide)
    return FAILURE  # exec_inside returns only by raising


def enter(name, shell=None, source=None):
    """`nsshell enter NAME`: the user's shell (or shell) inside the vault, in
    a child; returns its exit status once it ends.  This process stays
    outside the vault, so that the caller can then say what keeps it open."""
    from nsshell import shells

    current = lightos.getenv("NSSHELL_VAULT")
    if current and kernel.in_child_user_namespace():
        if current == name:
            raise NsshellError(f"already inside vault {name!r}", USAGE)
        raise NsshellError(
            f"already inside vault {current!r}; leave it first (exit its shell), then enter {name!r}", USAGE
        )
    shell = shell or shells.user_shell()
    argv, extra_env = shells.inner_argv(shell), shells.inner_env(shell)
    child = exec_inside(name, argv, extra_env=extra_env, passphrase_source=source, session=True, fork=True)
    return _wait_for_the_shell(child)


def _wait_for_the_shell(child):
    """Wait for the session's shell; the terminal's signals are its own.

    SIGHUP too: a hang-up reaches the shell from the kernel (it is the
    terminal's foreground), and the keeper signals the shell itself when
    it locks.  Passed on as well, it made bash lose the history it saves
    on SIGHUP in 3 of 8 runs of tests/desktop/test_autolock.py (0 of 12
    without).  SIGTERM, which nothing else sends it, is passed on."""
    import _signal  # the C core of signal: `signal` imports enum, and enter must not get slower

    for signum in (_signal.SIGINT, _signal.SIGQUIT, _signal.SIGTSTP, _signal.SIGHUP):
        _signal.signal(signum, _signal.SIG_IGN)
    _signal.signal(_signal.SIGTERM, lambda received, frame: _pass_on(child, received))
    status = posix.waitpid(child, 0)[1]
    code = posix.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _pass_on(child, signum):
    try:
        posix.kill(child, signum)
    except ProcessLookupError:
        pass


def exec_inside(name, argv, extra_env=None, passphrase_source=None, session=False, hide=(), fork=False):
    """Replace this process by argv running inside vault name.  Returns only
    by raising NsshellError, or with fork.

    session: argv is the session's interactive shell (``enter``): also tell
    it its own pid, so that ``vault leave`` closes only that shell.
    hide: host paths covered, for this command only (``run --hide``).
    fork: once the vault is open and its namespace fds are here, fork: this
    process returns the child's pid and stays outside the vault; the child
    joins and execs (and exits with a message line on an error).  Only the
    join and what follows run in the child, so `enter` starts no later."""
    check_name(name)
    cwd = client.current_directory()
    base = paths.runtime_dir()
    joined = client.join(name, base)
    if joined is None:
        from nsshell import unlock

        unlock.ensure_open(name, passphrase_source)
        joined = client.join(name, base)
        if joined is None:
            raise NsshellError(f"vault {name!r} locked again before the command could start; try again", FAILURE)
    mountpoint, history, fds, bus = joined
    outer_tmp = _tmp_identity()
    if fork:
        child = posix.fork()
        if child != 0:
            for fd in fds:
                posix.close(fd)
            return child
        try:
            _join_and_exec(name, argv, extra_env, session, hide, cwd, mountpoint, history, fds, outer_tmp, bus, base)
        except NsshellError as exc:
            sys.stderr.write(f"nsshell: {exc.message}\n")
            sys.stderr.flush()
            posix._exit(exc.code)
        except BaseException:  # never let the child return into the caller's code
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            posix._exit(FAILURE)
    _join_and_exec(name, argv, extra_env, session, hide, cwd, mountpoint, history, fds, outer_tmp, bus, base)


def _join_and_exec(name, argv, extra_env, session, hide, cwd, mountpoint, history, fds, outer_tmp, bus, base):
    client.enter_namespaces(name, fds)
    if hide:
        from nsshell import plan  # only for --hide: not on the plain hot path

        plan.hide_for_this_command(hide, mountpoint)
    try:
        posix.chdir(cwd)
    except OSError:
        posix.chdir(mountpoint)
        sys.stderr.write(f"nsshell: {cwd} is not reachable inside the vault; starting in {mountpoint}\n")
    env = dict(lightos.environ())
    env["NSSHELL_VAULT"] = name
    env["NSSHELL_MOUNTPOINT"] = mountpoint
    if extra_env:
        env.update(extra_env)
    if session:
        env["NSSHELL_SHELL_PID"] = str(posix.getpid())  # exec keeps the pid
    else:
        env.pop("NSSHELL_SHELL_PID", None)  # a shell started by `run` is not the session's
    # Every process inside learns where shells keep history (a `run NAME --
    # bash -i` as much as `enter`).  <mountpoint>/.nsshell also marks the
    # vault: prompts test for it to tell a live vault from a bare mountpoint.
    env["NSSHELL_HISTORY"] = history
    env.pop("NSSHELL_HISTDIR", None)
    marker = lightos.join(mountpoint, ".nsshell")
    try:
        if not lightos.isdir(marker):  # a stat the kernel answers from its cache; mkdir always asks gocryptfs
            posix.mkdir(marker, 0o700)
    except FileExistsError:
        pass
    except OSError:
        if history == "vault":
            history = env["NSSHELL_HISTORY"] = "off"  # never fall back to the outer history
    if history == "vault":
        env["NSSHELL_HISTDIR"] = marker
    tool_state_env(env, mountpoint, private_tmp=_tmp_identity() != outer_tmp)
    gui_state_env(env, mountpoint)
    session_bus_env(env, bus, name, base)
    kernel.restore_core_limit()  # set to 0 while a passphrase was here; exec resets dumpability
    try:
        lightos.execvpe(argv[0], argv, env)
    except FileNotFoundError:
        raise NsshellError(f"{argv[0]}: command not found", COMMAND_NOT_FOUND) from None
    except PermissionError:
        raise NsshellError(f"{argv[0]}: permission denied", CANNOT_EXECUTE) from None
    except OSError as exc:
        raise NsshellError(f"{argv[0]}: {exc.strerror}", CANNOT_EXECUTE) from None
