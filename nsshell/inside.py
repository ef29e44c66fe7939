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
from nsshell.stateenv import gui_state_env, session_bus_env, tool_state_env
from nsshell.errors import CANNOT_EXECUTE, COMMAND_NOT_FOUND, FAILURE, USAGE, NsshellError
from nsshell.names import check_name

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
