"""Where programs inside a vault keep their state: the environment that
sends their histories, caches, temporary files and GUI state into the vault.

Shared by the client, which sets it for every command it starts inside
(nsshell.inside), and by the holder, which shadows the same files
(nsshell.plan) and starts the vault's bus daemon with it
(nsshell.sessionbus): one table, and no import from the holder's side into
the client's.  On the hot path of ``nsshell run``: built-in modules and
nsshell.lightos only, no os.
"""

from nsshell import lightos, paths

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
