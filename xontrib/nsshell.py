"""nsshell for xonsh: the ``vault`` command, a prompt field and TAB completion.

Load it with ``xontrib load nsshell`` (nsshell installed in xonsh's Python),
or, when xonsh cannot import nsshell (pipx, uv tool), with
``execx($(nsshell init xonsh), 'exec', __xonsh__.ctx, filename='nsshell')``.

This module imports nothing from the ``nsshell`` package, so that second way
works with a copy of this file alone.  It talks to nsshell only through its
command line, and reads only environment variables and one directory:

- ``vault VERB ...`` runs ``nsshell VERB ...`` as a normal foreground job;
  ``vault enter`` starts a new interactive xonsh inside the vault (xonsh runs
  threads, so it cannot join a namespace in place), ``vault leave`` exits it.
- ``{vault}`` renders ``[vault:NAME] `` inside a vault and nothing outside;
  ``{nsshell_vault}`` is the bare name, for placing it yourself.
- Inside a vault, history goes to ``$NSSHELL_HISTDIR/xonsh`` (in the
  encrypted vault) or nowhere, never to the outer shell's history files.

Nothing runs at import time; ``_load_xontrib_`` does the work and
``_unload_xontrib_`` undoes it.
"""

import os
import re
import sys

__all__ = ()

ALIAS = "vault"
_SAY_ALIAS = "_nsshell_vault_say"  # prints a message with an exit status; see _Integration.say
_COMPLETER = "nsshell_vault"
_FIELD = "vault"
_NAME_FIELD = "nsshell_vault"
_PROMPT_SEGMENT = "{" + _FIELD + "}"

# Overridden by the code `nsshell init xonsh` renders: the absolute path of
# the nsshell that rendered it, --cmd and --no-prompt.
NSSHELL_EXE = None
ADD_PROMPT = True

# The same rule as nsshell.names; anything else in $NSSHELL_VAULT is not
# ours to print in a prompt (it could carry colour tokens).
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

# Verbs passed to the nsshell CLI, with their options for completion.
# Options whose value is a path are completed by xonsh's path completer.
_PASS = ["--passfile", "--extpass"]
VERBS = {
    "enter": ("start a new xonsh inside vault NAME (vault leave returns)", ["--passfile", "--shell"]),
    "leave": ("leave the vault shell that 'vault enter' started", []),
    "run": ("run one command inside a vault: vault run NAME -- CMD...", _PASS + ["--"]),
    "open": ("unlock a vault and keep it open until 'vault lock'", _PASS + ["--quiet"]),
    "lock": ("lock a vault (or --all)", ["--all", "--force"]),
    "list": ("list vaults and whether they are open", ["--json"]),
    "status": ("details of one vault, or all", ["--json"]),
    "ps": ("processes that can see a vault", ["--json"]),
    "create": ("create a new encrypted vault", ["--passfile", "--cipher-dir", "--mountpoint", "--json"]),
    "remove": ("forget a vault (--purge also deletes its ciphertext)", ["--purge", "--yes"]),
    "add": ("register an existing gocryptfs directory as a vault", ["--cipher-dir", "--mountpoint", "--passfile"]),
    "passwd": ("change a vault's passphrase", ["--passfile", "--new-passfile"]),
    "keyring": ("keyring add|remove NAME: keep a vault's passphrase in the keyring", ["--passfile"]),
    "doctor": ("check that this machine can run vaults", ["--json"]),
}
_TAKES_NAME = {"enter", "run", "open", "lock", "status", "ps", "remove", "passwd"}
_TAKES_VALUE = {"--passfile", "--new-passfile", "--extpass", "--shell", "--cipher-dir", "--mountpoint"}

# The same text as `vault help` in bash and zsh (tests/test_newcomer.py).
HELP = """\
usage: {cmd} COMMAND [ARGS...]

  enter NAME               start a shell inside vault NAME ('{cmd} leave' returns)
  leave                    leave the shell that '{cmd} enter' started
  run NAME -- COMMAND...   run one command inside vault NAME
  list                     the vaults, and whether they are open
  open, lock, status, ps, create, remove, doctor
                           as 'nsshell COMMAND' (see 'nsshell COMMAND --help')
  help                     this text
"""


def _help_text():
    return HELP.format(cmd=ALIAS)


def _did_you_mean(word):
    import difflib

    close = difflib.get_close_matches(word, [*VERBS, "help"], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _enabled(value):
    """$NSSHELL_PROMPT: unset or anything but 0/no/false/off means on."""
    return str(value).strip().lower() not in ("0", "no", "false", "off")


class _Integration:
    """Everything one load of the xontrib installs, so unload can take it back."""

    def __init__(self, xsh, exe=None):
        self.xsh = xsh
        self.exe = exe
        self.prompt_added = None  # the $PROMPT value we produced, if we changed it
        self.handlers = []  # (event, handler)
        self.history_warned = False
        self.messages = []  # texts for say(), by number (see message())
        self.said = 0  # how many were dropped from the front of messages

    # --- the nsshell executable and this xonsh -----------------------------------------

    def nsshell(self):
        """The nsshell to run: the one that rendered us, the one installed
        next to this Python (same environment as this module), or PATH's."""
        if self.exe:
            return self.exe
        sibling = os.path.join(os.path.dirname(sys.executable), "nsshell")
        if os.access(sibling, os.X_OK):
            self.exe = sibling
            return sibling
        import shutil

        path = os.pathsep.join(map(str, self.xsh.env.get("PATH") or [])) or None
        found = shutil.which("nsshell", path=path)
        return found or "nsshell"  # not cached: it may be installed later

    @staticmethod
    def this_xonsh():
        """Path of an xonsh to start inside the vault: this one."""
        argv0 = sys.argv[0] if sys.argv else ""
        if os.path.basename(argv0).startswith("xonsh") and os.path.isabs(argv0) and os.access(argv0, os.X_OK):
            return argv0
        sibling = os.path.join(os.path.dirname(sys.executable), "xonsh")
        if os.access(sibling, os.X_OK):
            return sibling
        import shutil

        return shutil.which("xonsh") or "xonsh"

    # --- the vault alias ----------------------------------------------------------------

    def message(self, code, where, text):
        """The command that prints text and returns code: see say()."""
        self.messages.append(text)
        if len(self.messages) > 16:  # a few pending ones are plenty
            self.said += len(self.messages) - 16
            del self.messages[:-16]
        return [_SAY_ALIAS, str(code), where, str(self.said + len(self.messages) - 1)]

    def say(self, args, stdin=None, stdout=None, stderr=None):
        """_nsshell_vault_say CODE out|err ID: print message ID, return CODE.

        The vault alias returns a command (so nsshell runs as a normal
        foreground job); messages of its own go through this helper, so they
        are printed when the command runs, can be redirected, and carry an
        exit status.  The text itself stays here: as an argument of the
        returned command xonsh would expand $NAMES and {fields} in it."""
        code, where, key = args[0], args[1], int(args[2])
        index = key - self.said
        text = self.messages[index] if 0 <= index < len(self.messages) else ""
        stream = (stdout or sys.stdout) if where == "out" else (stderr or sys.stderr)
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
        return int(code)

    def vault(self, args, decorators=None, env=None):
        """vault VERB [ARGS...]: nsshell's vaults from xonsh (vault help)."""
        # Keep this body free of side effects except enter's history flush:
        # xonsh's alias completer calls it with no arguments.
        args = list(args)
        if not args:
            return self.message(2, "err", _help_text())
        verb, rest = args[0], args[1:]
        if verb in ("help", "-h", "--help"):
            return self.message(0, "out", _help_text())
        if verb == "leave":
            return self.leave()
        if verb not in VERBS:
            return self.message(2, "err", f"{ALIAS}: unknown command {verb!r}{_did_you_mean(verb)}; see '{ALIAS} help'")
        if verb == "enter":
            if rest and not rest[0].startswith("-") and "--shell" not in rest:
                rest = rest + ["--shell", self.this_xonsh()]
            self.flush_history()
        return [self.nsshell(), verb, *rest]

    def leave(self):
        env = self.xsh.env
        name = env.get("NSSHELL_VAULT")
        if not name:
            return self.message(1, "err", f"{ALIAS} leave: this shell is not inside a vault")
        if str(env.get("NSSHELL_SHELL_PID", "")) != str(os.getpid()):
            return self.message(
                1,
                "err",
                f"{ALIAS} leave: this xonsh (pid {os.getpid()}) was not started by 'vault enter'; it runs inside "
                f"vault {name} in another shell (pid {env.get('NSSHELL_SHELL_PID') or 'unknown'}). "
                "Type 'exit' to end this one first.",
            )
        return ["exit"]

    def flush_history(self):
        history = getattr(self.xsh, "history", None)
        if history is None:
            return
        try:
            flusher = history.flush()
            if hasattr(flusher, "join"):
                flusher.join(2.0)  # the outer history is on disk before the inner shell starts
        except Exception:  # never let history break 'vault enter'
            pass

    # --- prompt ---------------------------------------------------------------------------

    def name_field(self):
        """{nsshell_vault}: the vault's name inside a vault, else None."""
        name = self.xsh.env.get("NSSHELL_VAULT")
        return name if name and _NAME_RE.match(name) else None

    def segment_field(self):
        """{vault}: '[vault:NAME] ' inside a vault ('[vault:NAME locked] '
        if its mount is no longer there, as in bash and zsh), else None.  Starts no process: one
        environment lookup and, inside a vault, two stat calls."""
        env = self.xsh.env
        name = env.get("NSSHELL_VAULT")
        if not name:
            return None
        if not _NAME_RE.match(name):
            name = "?"
        mountpoint = env.get("NSSHELL_MOUNTPOINT")
        gone = not (mountpoint and os.path.ismount(mountpoint))
        text = f"[vault:{name}{' locked' if gone else ''}]"
        if env.get("NO_COLOR"):
            return text + " "
        colour = "{BOLD_RED}" if gone else "{BOLD_YELLOW}"
        return f"{colour}{text}{{RESET}} "

    def prompt_wanted(self):
        return _enabled(self.xsh.env.get("NSSHELL_PROMPT", "1"))

    def add_to_prompt(self, **_):
        """Put {vault} in front of $PROMPT unless it (or {nsshell_vault}) is
        there already, the user opted out, or $PROMPT is a function."""
        env = self.xsh.env
        if not (ADD_PROMPT and self.prompt_wanted()):
            return
        prompt = env.get("PROMPT")
        if not isinstance(prompt, str):
            return
        if "{" + _FIELD in prompt or "{" + _NAME_FIELD in prompt:
            return
        env["PROMPT"] = self.prompt_added = _PROMPT_SEGMENT + prompt

    def remove_from_prompt(self):
        env = self.xsh.env
        prompt = env.get("PROMPT")
        if self.prompt_added is not None and prompt == self.prompt_added:
            env["PROMPT"] = prompt[len(_PROMPT_SEGMENT) :]
        self.prompt_added = None

    # --- history privacy ------------------------------------------------------------------

    def history_plan(self):
        """Where this xonsh's history may go: None (not our business: not in
        a vault, or the user chose NSSHELL_HISTORY=outer), 'off', or the
        data directory inside the vault."""
        env = self.xsh.env
        if not env.get("NSSHELL_VAULT"):
            return None
        mode = env.get("NSSHELL_HISTORY")
        if mode == "outer":
            return None
        histdir = env.get("NSSHELL_HISTDIR")
        mountpoint = env.get("NSSHELL_MOUNTPOINT")
        if mode != "vault" or not histdir or not mountpoint:
            return "off"  # e.g. 'nsshell run NAME -- xonsh': no history place was given
        if not os.path.ismount(mountpoint):
            return "off"  # not really inside: never create files under an unmounted mountpoint
        real_mount = os.path.realpath(mountpoint)
        real_hist = os.path.realpath(histdir)
        if not real_hist.startswith(real_mount.rstrip("/") + "/") or not os.path.isdir(real_hist):
            return "off"
        datadir = os.path.join(real_hist, "xonsh")
        try:
            os.makedirs(datadir, mode=0o700, exist_ok=True)
        except OSError:
            return "off"
        return datadir

    def route_history(self, **_):
        """Point the history backend (not yet constructed: xonsh builds it
        after the rc files) at the vault.  Runs at load and again after the
        rc files, so an rc that sets $XONSH_HISTORY_FILE or
        $XONSH_DATA_DIR after 'xontrib load nsshell' is overridden."""
        plan = self.history_plan()
        if plan is None:
            return
        env = self.xsh.env
        if plan == "off":
            env["XONSH_HISTORY_BACKEND"] = "dummy"
            return
        backend = env.get("XONSH_HISTORY_BACKEND", "json")
        if backend == "dummy" and env.get("NSSHELL_XONSH_HISTORY_BACKEND"):
            # nsshell starts the inner xonsh with history off (so that without
            # this xontrib nothing leaks) and tells us what the outer one used.
            backend = env["NSSHELL_XONSH_HISTORY_BACKEND"]
        if backend not in ("json", "sqlite", "dummy"):
            # A custom backend may store anywhere; json is known to follow
            # $XONSH_DATA_DIR.
            self.warn_history(f"history backend {backend!r} replaced by 'json' inside the vault")
            backend = "json"
        env["XONSH_HISTORY_BACKEND"] = backend
        env["XONSH_DATA_DIR"] = plan
        # The outer xonsh exports its own session file; inheriting it would
        # append the vault's commands to the outer history.
        for var in ("XONSH_HISTORY_FILE", "XONSH_HISTORY_SQLITE_FILE"):
            if var in env:
                del env[var]

    def check_history(self, **_):
        """After xonsh built its history: if it still points outside the
        vault (something changed it after the rc files), switch it off."""
        plan = self.history_plan()
        if plan is None:
            return
        history = getattr(self.xsh, "history", None)
        if history is None or type(history).__name__ == "DummyHistory":
            return
        filename = getattr(history, "filename", None)
        if plan != "off" and filename and os.path.realpath(str(filename)).startswith(plan + "/"):
            return
        from xonsh.history.dummy import DummyHistory

        self.xsh.history = DummyHistory()
        interface = getattr(self.xsh, "interface", None)
        if interface is not None and hasattr(interface, "history"):
            interface.history = self.xsh.history
        self.warn_history(f"history would have been written to {filename}, outside the vault; it is off in this shell")

    def warn_history(self, text):
        if not self.history_warned:
            self.history_warned = True
            sys.stderr.write(f"nsshell: {text}\n")

    # --- completion -----------------------------------------------------------------------

    def vault_names(self):
        """Names from the one-empty-file-per-vault directory nsshell keeps."""
        env = self.xsh.env
        config = env.get("XDG_CONFIG_HOME") or ""
        if not os.path.isabs(config):
            config = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".config")
        try:
            return sorted(n for n in os.listdir(os.path.join(config, "nsshell", "names")) if _NAME_RE.match(n))
        except OSError:
            return []

    def complete(self, command):
        """TAB after 'vault': verbs, vault names, options, and after
        'vault run NAME --' whatever the command there completes to."""
        from xonsh.completers.tools import RichCompletion

        prefix = command.prefix
        index = command.arg_index
        words = [arg.value for arg in command.args[:index]]  # words[0] == 'vault'

        def pick(candidates, descriptions=None):
            return {
                RichCompletion(c, description=(descriptions or {}).get(c, ""), append_space=True)
                for c in candidates
                if c.startswith(prefix)
            }

        if index == 1:
            verbs = list(VERBS) + ["help"]
            return pick(verbs, {verb: text for verb, (text, _) in VERBS.items()})
        verb = words[1]
        if verb == "run" and "--" in words[2:]:
            return self.complete_inner(command, words.index("--"))
        if verb not in VERBS:
            return None
        if words[-1] in _TAKES_VALUE:
            return None  # a file or program: xonsh's path completion
        if prefix.startswith("-"):
            return pick(VERBS[verb][1])
        if verb in _TAKES_NAME and not self.has_positional(words[2:]):
            return pick(self.vault_names())
        return set()

    @staticmethod
    def has_positional(words):
        skip = False
        for word in words:
            if skip:
                skip = False
            elif word in _TAKES_VALUE:
                skip = True
            elif not word.startswith("-"):
                return True
        return False

    def complete_inner(self, command, dashdash):
        """Complete 'vault run NAME -- CMD ARGS' as if the line were 'CMD ARGS'."""
        from xonsh.parsers.completion_context import CompletionContext

        inner = command._replace(args=command.args[dashdash + 1 :], arg_index=command.arg_index - dashdash - 1)
        if inner.arg_index == 0:
            from xonsh.completers.commands import complete_command

            return complete_command(inner)
        shell = getattr(getattr(self.xsh, "shell", None), "shell", None)
        completer = getattr(shell, "completer", None)
        if completer is None:
            from xonsh.completer import Completer

            completer = Completer()
        return completer.complete_from_context(CompletionContext(inner))


_active = None


def _handler(event, method):
    """Register method for event.  xonsh stores attributes on handlers,
    which bound methods refuse, so each gets a small function of its own."""

    def handler(**_):
        method()

    handler.__name__ = handler.__qualname__ = f"nsshell_{method.__name__}"
    handler.nsshell = True
    event(handler)
    return handler


def _load_xontrib_(xsh, exe=None, **_):
    """Install the vault alias, prompt fields, completer and history routing."""
    global _active
    if _active is not None:
        _unload_xontrib_(_active.xsh)
    if not hasattr(type(xsh.aliases), "return_command"):
        # Before xonsh 0.18 an alias cannot return a command to run: `vault`
        # would print it instead.  Say so once, and install nothing.
        import xonsh

        sys.stderr.write(
            f"nsshell: this xonsh ({getattr(xonsh, '__version__', '?')}) is too old for the 'vault' command; "
            "it needs xonsh 0.18 or later (e.g. 'pipx install xonsh'); 'nsshell enter NAME' works meanwhile\n"
        )
        return {}
    from xonsh.completers.completer import add_one_completer
    from xonsh.completers.tools import contextual_command_completer_for

    integration = _Integration(xsh, exe or NSSHELL_EXE)

    alias = integration.vault
    alias.__func__.return_what = "command"  # run nsshell as a foreground job, not in a thread
    xsh.aliases[ALIAS] = alias
    xsh.aliases[_SAY_ALIAS] = integration.say

    fields = xsh.env["PROMPT_FIELDS"]
    fields[_FIELD] = integration.segment_field
    fields[_NAME_FIELD] = integration.name_field
    integration.add_to_prompt()

    completer = contextual_command_completer_for(ALIAS)(integration.complete)
    completer.__doc__ = "nsshell: vault verbs, vault names and options"
    # Before xonsh's own exclusive completers, or its alias completer would
    # answer first (by calling the alias).
    add_one_completer(_COMPLETER, completer, "start")

    events = xsh.builtins.events
    handlers = [(events.on_post_rc, integration.route_history), (events.on_post_init, integration.check_history)]
    if xsh.env.get("NSSHELL_VAULT"):
        # Something (an rc, starship) may replace $PROMPT after we load.
        handlers.append((events.on_pre_prompt_format, integration.add_to_prompt))
    for event, method in handlers:
        integration.handlers.append((event, _handler(event, method)))

    integration.route_history()
    _active = integration
    return {}


def _unload_xontrib_(xsh, **_):
    """Remove everything _load_xontrib_ installed."""
    global _active
    integration = _active
    _active = None
    if integration is None:
        return
    for name in (ALIAS, _SAY_ALIAS):
        if name in xsh.aliases:
            del xsh.aliases[name]
    fields = xsh.env.get("PROMPT_FIELDS")
    if fields is not None:
        for name in (_FIELD, _NAME_FIELD):
            if name in fields:
                del fields[name]
    integration.remove_from_prompt()
    if _COMPLETER in xsh.completers:
        del xsh.completers[_COMPLETER]
    for event, handler in integration.handlers:
        event.discard(handler)
    integration.handlers = []
