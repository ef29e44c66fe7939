"""The ``nsshell`` command line: argparse, and every verb.

The plain forms of ``run``, ``enter`` and ``init``, the hot path, never
come here: nsshell.entry recognises them by hand and goes straight to
nsshell.inside, before this module or argparse is imported.
"""

import sys

from nsshell.errors import FAILURE, USAGE, NsshellError, exit_code_of
from nsshell.errors import report as _error

PROG = "nsshell"


def main(argv=None):
    """The whole command line, through argparse (nsshell.entry.main, the
    installed command, tries its plain fast forms first)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return exit_code_of(lambda: dispatch(argv))


# --- verbs ------------------------------------------------------------------------------


def _source(args):
    from nsshell.passphrase import PassphraseSource

    return PassphraseSource(passfile=getattr(args, "passfile", None), extpass=getattr(args, "extpass", None))


def cmd_run(args):
    from nsshell.registry import context_path_problem

    for path in args.hide or ():
        problem = context_path_problem("hide", path)
        if problem:
            raise NsshellError(f"--hide {problem}", USAGE)
    from nsshell import inside

    return inside.run(args.name, list(args.command), _source(args), hide=args.hide or ())


def cmd_enter(args):
    from nsshell import inside

    code = inside.enter(args.name, args.shell, _source(args))
    say_what_keeps_it_open(args.name)
    return code


def cmd_create(args):
    from nsshell import vaults

    vault = vaults.create(args.name, _source(args), cipher_dir=args.cipher_dir, mountpoint=args.mountpoint)
    if args.json:
        return _print_json(vaults.describe(vault))
    print(f"created vault {vault.name!r}")
    print(f"  ciphertext: {vault.cipher_dir}")
    print(f"  mountpoint: {vault.mountpoint} (empty to everything outside the vault)")
    print(f"next: nsshell enter {vault.name}   or   nsshell run {vault.name} -- COMMAND")
    return 0


def cmd_open(args):
    from nsshell import unlock
    from nsshell.names import check_name

    check_name(args.name)
    unlocked = unlock.ensure_open(args.name, _source(args), hold=True)
    if not args.quiet:
        verb = "opened" if unlocked else "is already open; it now stays open"
        sys.stderr.write(f"vault {args.name!r} {verb} until 'nsshell lock {args.name}'\n")
    return 0


def cmd_lock(args):
    from nsshell import registry, unlock

    if args.all == bool(args.name):
        raise NsshellError("name one vault, or use --all", USAGE)
    names = sorted(registry.load()) if args.all else [args.name]
    if not args.all:
        registry.get(args.name)
    failures, last_code = 0, 0
    for name in names:
        try:
            locked = unlock.lock(name, force=args.force)
        except NsshellError as exc:
            _error(exc.message)
            failures += 1
            last_code = exc.code
            continue
        if locked:
            sys.stderr.write(f"vault {name!r} locked\n")
        elif not args.all:
            sys.stderr.write(f"vault {name!r} was not open\n")
    return last_code if failures else 0


def cmd_list(args):
    from nsshell import vaults

    rows = vaults.overview()
    if args.json:
        return _print_json(rows)
    if not rows:
        print("no vaults yet; create one with: nsshell create NAME")
        return 0
    _print_table(
        ["NAME", "STATE", "SESSIONS", "MOUNTPOINT", "CIPHER DIR"],
        [[r["name"], r["state"], str(r["sessions"]), _tilde(r["mountpoint"]), _tilde(r["cipher_dir"])] for r in rows],
        colour_column=1,
    )
    for r in rows:
        if r.get("warning"):
            sys.stderr.write(f"warning: {r['name']}: {r['warning']}\n")
    return 0


def cmd_status(args):
    from nsshell import registry, vaults

    if args.name is not None:  # 'status ""' names no vault; it does not mean all of them
        registry.get(args.name)
    rows = vaults.overview(only=args.name, detail=True)
    if args.json:
        return _print_json(rows[0] if args.name is not None else rows)
    if not rows:
        print("no vaults yet; create one with: nsshell create NAME")
    for row in rows:
        print(f"{row['name']}: {_paint(row['state'])}")
        if row.get("error"):
            print(f"  error:      {row['error']}")
        if row.get("warning"):
            print(f"  warning:    {row['warning']}")
        print(f"  sessions:   {row['sessions']}" + (f" (pids {', '.join(map(str, row['session_pids']))})" if row.get("session_pids") else ""))
        if row.get("service_pids"):
            print(f"  services:   {len(row['service_pids'])} (the vault's session bus and what it started; "
                  "they end when it locks)")
        print(f"  mountpoint: {row['mountpoint']}")
        print(f"  cipher dir: {row['cipher_dir']}")
        print(f"  linger:     {row['linger']}s" + ("; held open until 'nsshell lock'" if row.get("hold") else ""))
        print(f"  locks on:   {', '.join(row['lock_on']) or 'nothing (lock_on = [])'}"
              + (f"; idle for {row['idle_lock']}s" if row["idle_lock"] else ""))
        if row["keyring"]:
            print("  keyring:    passphrase stored ('nsshell keyring remove' forgets it)")
        _print_context(row)
    return 0


def _print_list(label, items):
    """label, then the items, comma-separated and wrapped so that a long
    list (24 shadowed paths) stays readable: continuation lines indented."""
    import shutil
    import textwrap

    width = max(60, shutil.get_terminal_size((100, 24)).columns - 1)
    first = f"  {label:<11} " if len(label) < 12 else f"  {label} "
    # A no-break space inside each item keeps "~/.lesshst (environment
    # LESSHISTFILE)" on one line; textwrap breaks at ASCII whitespace only.
    text = ", ".join(item.replace(" ", "\xa0") for item in items)
    wrapped = textwrap.fill(text, width=width, initial_indent=first, subsequent_indent=" " * 14,
                            break_on_hyphens=False, break_long_words=False)
    print(wrapped.replace("\xa0", " "))


def _print_context(row):
    """What stays inside the vault (docs/context.md): as set up while open,
    else as configured."""
    settings = row.get("settings") or {}
    if row.get("context"):
        by_kind = {}
        for kind, dest, how in row["context"]:
            by_kind.setdefault(kind, []).append((_tilde(dest or ""), how))
        for dest, how in by_kind.get("private tmp", []):
            print(f"  private:    {dest} ({how})")
        if "offline" in by_kind:
            print("  network:    offline (own network namespace, loopback only)")
        shadows = by_kind.get("shadow", [])
        placeholders = [dest for dest, how in shadows if how.startswith("bind over an empty placeholder")]
        done = [_shadow_entry(dest, how) for dest, how in shadows if not how.startswith(("missing", "not "))]
        _print_list("shadowed:", done or ["nothing"])
        if placeholders:
            _print_list("placeholders on the host (empty, made to bind over; removed at lock if untouched):",
                        placeholders)
        missing = [dest for dest, how in shadows if how.startswith("missing")]
        if missing:
            _print_list("not on host (not shadowed until it exists there at unlock):", missing)
        failed = [f"{dest} ({how})" for dest, how in shadows if how.startswith("not ")]
        if failed:
            _print_list("NOT shadowed:", failed)
        hidden = [dest for dest, how in by_kind.get("hide", []) if how == "hidden"]
        if hidden:
            _print_list("hidden:", hidden)
        refused = [f"{dest} ({how})" for dest, how in by_kind.get("hide", []) if how.startswith("not ")]
        if refused:
            _print_list("NOT hidden:", refused)
    elif settings:
        where = "in the vault" if settings.get("keep_tmp") else "in memory, gone at lock"
        print(f"  private:    /tmp, /var/tmp ({where})" if settings.get("private_tmp") else "  private:    no private /tmp")
        print(f"  network:    {'offline (loopback only)' if settings.get('offline') else 'the host network'}")
        extra = ", ".join(settings.get("private", []))
        print(f"  shadowed:   tool state under HOME (the default list{' and ' + extra if extra else ''})")
        if settings.get("hide"):
            print(f"  hidden:     {', '.join(settings['hide'])}")
    if row.get("dbus"):
        print(f"  d-bus:      {_BUS_WORDS.get(row['dbus'], row['dbus'])}")


def _shadow_entry(dest, how):
    """A shadowed path as status lists it, with what the user may need to know."""
    if how.startswith("environment"):
        return f"{dest} ({how})"
    note = how.partition(" (")[2]  # "bind (the vault's copy was a symbolic link ...)": nsshell.plan
    return f"{dest} ({note}" if note else dest


_BUS_WORDS = {
    "vault": "the vault's own session bus (notifications relayed to the host's)",
    "host": "the host's session bus (dbus = \"host\")",
    "none": "no session bus (dbus = \"none\")",
}


def _short_command(proc):
    """'/usr/bin/sleep 600' -> 'sleep'; a server that names itself ('tmux:
    server') by that name."""
    import os

    if ": " in proc.get("name", ""):
        return proc["name"]
    return os.path.basename(proc["command"].split(" ", 1)[0]) or proc["command"]


def cmd_left(args):
    """Say what keeps the vault open, if anything does (issue 9); silent
    otherwise.  `enter` says it itself now; shells that loaded an older
    integration still call this after it."""
    say_what_keeps_it_open(args.name)
    return 0


def say_what_keeps_it_open(name):
    """After a session: one line if processes keep the vault open, else nothing."""
    from nsshell.names import name_problem

    if not name or name_problem(name):
        return
    try:
        procs = _processes_inside(name)
    except NsshellError as exc:
        _error(exc.message)  # but the session's own exit status stands
        return
    if not procs:
        return
    names = list(dict.fromkeys(_short_command(proc) for proc in procs))
    count = len(procs)
    sys.stderr.write(
        f"{count} process{'es' if count != 1 else ''} still inside {name} ({'; '.join(names)}); it stays open "
        f"until {'they end' if count != 1 else 'it ends'}; see 'nsshell ps {name}', or "
        f"'nsshell lock {name} --force'\n"
    )


def _processes_inside(name):
    """What `nsshell ps` lists, or None when the vault is locked, from the
    keeper's STATUS and /proc: it runs each time enter's shell ends, so
    without what `ps` imports (nsshell.vaults, nsshell.unlock, psutil)."""
    from nsshell import client

    reply = client.request(name, "STATUS")
    if reply is None:
        return None
    import json

    found = []
    for pid in json.loads(reply[0]).get("members", []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            with open(f"/proc/{pid}/comm", "rb") as f:
                short = f.read().decode(errors="replace").rstrip("\n")  # what it calls itself: "tmux: server"
        except OSError:
            continue  # ended meanwhile
        found.append({"pid": pid, "command": " ".join(argv) or short, "name": short})
    return found


def cmd_ps(args):
    from nsshell import registry, vaults

    registry.get(args.name)
    procs = vaults.processes(args.name)
    if args.json:
        return _print_json(procs)
    if procs is None or not procs:
        state = "locked" if procs is None else "open with no processes"
        sys.stderr.write(f"vault {args.name!r} is {state}; no process can see it\n")
        return 0
    _print_table(["PID", "KIND", "COMMAND"], [[str(p["pid"]), p["kind"], p["command"]] for p in procs])
    return 0


def cmd_remove(args):
    import shlex

    from nsshell import vaults

    vault = vaults.remove(args.name, purge=args.purge, assume_yes=args.yes)
    if args.purge:
        sys.stderr.write(f"removed vault {vault.name!r} and deleted its ciphertext\n")
    else:
        sys.stderr.write(
            f"removed vault {vault.name!r} from the registry; its ciphertext stays in {vault.cipher_dir}\n"
            f"to use it again: nsshell add {vault.name} --cipher-dir {shlex.quote(vault.cipher_dir)}\n"
        )
    return 0


def cmd_add(args):
    from nsshell import vaults

    vault = vaults.adopt(args.name, _source(args), args.cipher_dir, mountpoint=args.mountpoint)
    if args.json:
        return _print_json(vaults.describe(vault))
    print(f"added vault {vault.name!r} (the passphrase opens it)")
    print(f"  ciphertext: {vault.cipher_dir}")
    print(f"  mountpoint: {vault.mountpoint} (empty to everything outside the vault)")
    print(f"next: nsshell enter {vault.name}   or   nsshell run {vault.name} -- COMMAND")
    return 0


def cmd_passwd(args):
    import os

    from nsshell import passwd, registry, unlock
    from nsshell.passphrase import PassphraseSource, prompt, read_passfile

    vault = registry.get(args.name)
    if not os.path.isfile(os.path.join(vault.cipher_dir, "gocryptfs.conf")):
        raise NsshellError(f"{vault.cipher_dir} has no gocryptfs.conf; is the cipher dir of {args.name!r} there?", FAILURE)
    is_open = unlock.holder_status(args.name) is not None
    old = PassphraseSource(passfile=args.passfile).read(args.name) if args.passfile else prompt(
        f"Current passphrase for {args.name}: "
    )
    if args.new_passfile:
        new = read_passfile(args.new_passfile)
    else:
        new = prompt(f"New passphrase for {args.name}: ", confirm=True)
    passwd.change(vault.cipher_dir, old, new)
    sys.stderr.write(f"changed the passphrase of vault {args.name!r}\n")
    if is_open:
        sys.stderr.write(
            f"vault {args.name!r} is open: its sessions go on undisturbed; the new passphrase is needed from its "
            "next unlock\n"
        )
    if vault.keyring:
        from nsshell import keyring

        try:
            keyring.store(args.name, new)
        except NsshellError as exc:
            raise NsshellError(
                f"{exc.message}; the keyring still holds the old passphrase: run 'nsshell keyring add {args.name}'",
                exc.code,
            ) from None
        sys.stderr.write("updated the passphrase in the keyring\n")
    return 0


def cmd_keyring(args):
    from nsshell import keyring, passwd, registry

    vault = registry.get(args.name)
    if args.action == "add":
        passphrase = _source(args).read(args.name)
        passwd.check(vault.cipher_dir, passphrase)
        keyring.store(args.name, passphrase)
        registry.update(args.name, keyring=True)
        sys.stderr.write(
            f"stored the passphrase of vault {args.name!r} in the keyring; while the keyring is unlocked, "
            f"'nsshell enter {args.name}' opens it without asking\n"
        )
    else:
        count = keyring.delete(args.name)
        registry.update(args.name, keyring=False)
        if count:
            sys.stderr.write(f"removed the passphrase of vault {args.name!r} from the keyring\n")
        else:
            sys.stderr.write(f"the keyring held no passphrase for vault {args.name!r}\n")
    return 0


def cmd_doctor(args):
    from nsshell import doctor

    checks = doctor.run_checks()
    if args.json:
        _print_json([c.as_dict() for c in checks])
    else:
        for check in checks:
            mark = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}[check.status]
            print(f"[{_paint(mark.strip(), mark)}] {check.title}: {check.detail}")
            if check.fix and check.status != "ok":
                print(f"       fix: {check.fix}")
    return 0 if all(c.status != "fail" for c in checks) else 5


def init_shell(shell, cmd, prompt):
    """`nsshell init SHELL`: print the shell code, and save it where the README's rc line sources it."""
    from nsshell import shells

    code = shells.render_init(shell, cmd=cmd, prompt=prompt)
    if shell != "xonsh":
        # The README's rc line sources this file while it is fresh and runs
        # us only when it is not: writing it here is what refreshes it.
        try:
            shells.write_cache(shell, code, cmd=cmd, prompt=prompt)
        except OSError as exc:
            _error(
                f"cannot save the shell code to {shells.cache_path(shell, cmd, prompt)} ({exc.strerror}); "
                "every new shell will start nsshell until that directory is writable"
            )
    sys.stdout.write(code)
    return 0


def cmd_init(args):
    return init_shell(args.shell, args.cmd, not args.no_prompt)


# --- output -----------------------------------------------------------------------------


def _print_json(value):
    import json

    print(json.dumps(value, indent=2))
    return 0


def _colour_enabled():
    import os

    return sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


_COLOURS = {"open": "32", "ok": "32", "locked": "2", "failed": "31", "FAIL": "31", "WARN": "33"}


def _paint(word, shown=None):
    shown = word if shown is None else shown
    code = _COLOURS.get(word)
    if code and _colour_enabled():
        return f"\033[{code}m{shown}\033[0m"
    return shown


def _tilde(path):
    import os

    home = os.environ.get("HOME", "")
    from nsshell.paths import is_under

    if home and is_under(path, home):
        return "~" + path[len(home.rstrip("/")) :]
    return path


def _print_table(header, rows, colour_column=None):
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for row in rows:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths)):
            padded = cell.ljust(width)
            cells.append(_paint(cell, padded) if i == colour_column else padded)
        print("  ".join(cells).rstrip())


# --- parser -----------------------------------------------------------------------------

DESCRIPTION = """\
Encrypted directories that only the sessions you start in them can see.

A vault is a gocryptfs directory mounted inside a private user+mount
namespace. Commands you run with 'nsshell run' or shells you start with
'nsshell enter' see the plaintext at its mountpoint; every other process
(other terminals, daemons, indexers) sees an empty directory.
"""

EPILOG = """\
examples:
  nsshell create taxes                      make a vault (asks for a passphrase twice)
  nsshell run taxes -- okular ~/Vaults/taxes/2025.pdf
  nsshell enter taxes                       a shell inside; 'exit' leaves
  nsshell lock --all                        lock everything now

shell integration (adds 'vault enter/leave', a prompt marker, TAB completion):
  . "${XDG_CACHE_HOME:-$HOME/.cache}/nsshell/init.bash" 2>/dev/null || eval "$(nsshell init bash)"
                                # in ~/.bashrc; zsh: the same with zsh, in ~/.zshrc
  execx($(nsshell init xonsh), 'exec', __xonsh__.ctx, filename='nsshell')   # in ~/.xonshrc

files: registry $XDG_CONFIG_HOME/nsshell/vaults.toml, ciphertext
$XDG_DATA_HOME/nsshell/vaults/NAME, sockets $XDG_RUNTIME_DIR/nsshell/.
exit codes: 0 ok, 1 error, 2 usage, 3 unknown vault, 4 passphrase, 5 machine
unsupported, 6 busy, 7 conflict, 8 unsafe runtime dir; run/enter: the command's.
"""


VERBS = ("create", "run", "enter", "open", "lock", "list", "status", "ps", "remove", "add", "passwd", "keyring",
         "doctor", "init")
NAME_HELP = "the vault's name (see 'nsshell list')"


def _did_you_mean(word, choices):
    """'; did you mean X?' for a near miss, else ''."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _shell_words(words):
    import shlex

    return " ".join(map(shlex.quote, words))


def _parser():
    import argparse

    from nsshell import __version__

    class Parser(argparse.ArgumentParser):
        """Usage errors in one line that says where to look, like every other error."""

        def error(self, message):
            message = message.replace("\n", "\\n")  # an argument with a newline must not split the line
            if message.startswith("argument COMMAND: invalid choice: "):
                word = message.split("'")[1] if message.count("'") >= 2 else ""
                hint = _did_you_mean(word, VERBS)
                if hint:
                    self.exit(USAGE, f"{self.prog}: unknown command '{word}'{hint}\n")
                message = f"unknown command '{word}'"
            self.exit(USAGE, f"{self.prog}: {message}; see '{self.prog} --help'\n")

    parser = Parser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"nsshell {__version__}")
    parser.add_argument("--json", action="store_true", help="machine-readable output (list, status, ps, doctor, create)")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", parser_class=Parser)

    # Verbs whose output has a JSON form say so in their own --help; the
    # others accept --json too (it is global) without showing it.
    json_verbs = {"create", "list", "status", "ps", "doctor"}

    def verb(name, func, help_text, description=None, **kw):
        p = sub.add_parser(name, help=help_text, description=description or help_text, **kw)
        p.set_defaults(func=func)
        shown = "machine-readable output (JSON)" if name in json_verbs else argparse.SUPPRESS
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=shown)
        return p

    def passphrase_options(p):
        p.add_argument("--passfile", metavar="FILE", help="read the passphrase from the first line of FILE ('-': stdin)")
        p.add_argument("--extpass", metavar="PROGRAM", help="run PROGRAM and take the first line it prints as the passphrase")

    p = verb("create", cmd_create, "create a new encrypted vault")
    p.add_argument("name", metavar="NAME", help="letters, digits, '.', '_', '-'; at most 64 bytes")
    p.add_argument("--passfile", metavar="FILE", help="read the new passphrase from the first line of FILE")
    p.add_argument("--cipher-dir", metavar="DIR", help="where the ciphertext lives (default: $XDG_DATA_HOME/nsshell/vaults/NAME)")
    p.add_argument("--mountpoint", metavar="DIR", help="where sessions see the plaintext (default: ~/Vaults/NAME)")

    p = verb(
        "run",
        cmd_run,
        "run one command inside a vault",
        "Run COMMAND inside vault NAME (unlocking it first if needed), in the current directory, "
        "with the terminal passed through. Exits with COMMAND's status.",
        usage="%(prog)s [-h] [--passfile FILE | --extpass PROGRAM] [--hide PATH]... NAME -- COMMAND [ARG...]",
        epilog="Everything after '--' is the command, its options included.",
    )
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    passphrase_options(p)
    p.add_argument(
        "--hide", action="append", metavar="PATH",
        help="cover PATH (e.g. ~/.ssh) with an empty read-only layer for this command only; repeatable",
    )

    p = verb(
        "enter",
        cmd_enter,
        "start your shell inside a vault",
        "Start an interactive shell inside vault NAME, in the current directory with the same "
        "environment. Sets NSSHELL_VAULT and NSSHELL_MOUNTPOINT. 'exit' leaves.",
    )
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    passphrase_options(p)
    p.add_argument("--shell", metavar="PATH", help="shell to start (default: $SHELL)")

    p = verb("open", cmd_open, "unlock a vault and keep it open with no session, until 'lock'")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    passphrase_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="say nothing when it worked")

    p = verb("lock", cmd_lock, "lock a vault (or all of them)")
    p.add_argument("name", metavar="NAME", nargs="?", help=NAME_HELP)
    p.add_argument("--all", action="store_true", help="lock every open vault")
    p.add_argument("--force", action="store_true", help="end running sessions first (SIGHUP, then SIGKILL)")

    verb("list", cmd_list, "list vaults and whether they are open")

    p = verb("status", cmd_status, "show details of one vault, or all")
    p.add_argument("name", metavar="NAME", nargs="?", help="the vault's name (default: every vault)")

    # The shell integration runs this after `vault enter` returns; not in --help.
    p = sub.add_parser(
        "left",
        description="Say what keeps vault NAME open, if anything (processes still inside it). "
        "The shell integration runs this when 'vault enter' returns; it takes enter's arguments.",
    )
    p.set_defaults(func=cmd_left)
    p.add_argument("name", metavar="NAME", nargs="?", default="", help="the vault's name")
    passphrase_options(p)
    p.add_argument("--shell", metavar="PATH", help="ignored (as given to enter)")

    p = verb("ps", cmd_ps, "list the processes that can see a vault")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)

    p = verb("remove", cmd_remove, "forget a vault (and with --purge, delete its ciphertext)")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--purge", action="store_true", help="also delete the encrypted data, irrevocably")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation of --purge")

    p = verb(
        "add",
        cmd_add,
        "adopt an existing gocryptfs directory as a vault",
        "Register an existing gocryptfs directory (synced from another machine, or left by 'remove') as "
        "vault NAME, after checking that the passphrase opens it. Nothing in it is changed.",
    )
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--cipher-dir", metavar="DIR", required=True, help="the gocryptfs directory (holds gocryptfs.conf)")
    p.add_argument("--mountpoint", metavar="DIR", help="where sessions see the plaintext (default: ~/Vaults/NAME)")
    p.add_argument("--passfile", metavar="FILE", help="read the passphrase from the first line of FILE ('-': stdin)")

    p = verb(
        "passwd",
        cmd_passwd,
        "change a vault's passphrase",
        "Change the passphrase of vault NAME (gocryptfs -passwd), open or locked, and the keyring entry if it "
        "has one. An open vault stays open; the new passphrase is needed from its next unlock.",
    )
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--passfile", metavar="FILE", help="read the current passphrase from the first line of FILE")
    p.add_argument("--new-passfile", metavar="FILE", help="read the new passphrase from the first line of FILE")

    p = verb(
        "keyring",
        cmd_keyring,
        "store a vault's passphrase in the login keyring, or remove it",
        "add: check that the passphrase opens vault NAME and store it in the Secret Service (GNOME Keyring, "
        "KWallet, KeePassXC); while the keyring is unlocked, the vault then opens without a prompt. "
        "remove: delete it from the keyring.",
    )
    p.add_argument("action", choices=["add", "remove"], metavar="add|remove", help="store the passphrase, or forget it")
    p.add_argument("name", metavar="NAME", help=NAME_HELP)
    p.add_argument("--passfile", metavar="FILE", help="read the passphrase from the first line of FILE ('-': stdin)")

    verb("doctor", cmd_doctor, "check that this machine can run vaults, and say how to fix what is missing")

    p = verb(
        "init",
        cmd_init,
        "print shell integration code for your rc file",
        "Print the code that gives SHELL the 'vault' command, a prompt marker and TAB\n"
        "completion, and save it (bash, zsh) where the rc line below sources it.",
        epilog='rc lines:  . "${XDG_CACHE_HOME:-$HOME/.cache}/nsshell/init.bash" 2>/dev/null || eval "$(nsshell init bash)"\n'
        "          (zsh: the same with zsh; ~/.xonshrc: execx($(nsshell init xonsh), 'exec', __xonsh__.ctx, filename='nsshell'))",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", metavar="SHELL", choices=["bash", "zsh", "xonsh"], help="bash, zsh or xonsh")
    p.add_argument("--cmd", default="vault", metavar="NAME", help="name of the shell function (default: vault)")
    p.add_argument("--no-prompt", action="store_true", help="leave the prompt alone")
    return parser


def dispatch(argv):
    parser = _parser()
    command = None
    if argv and argv[0] == "run" and "--" in argv:
        # Everything after the first '--' is the command, options included.
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1 :]
    if argv and argv[0] == "run" and command is None:
        args, extra = parser.parse_known_args(argv)
        if extra:
            given = argv[: len(argv) - len(extra)] if argv[len(argv) - len(extra) :] == extra else ["run", args.name, "..."]
            raise NsshellError(
                f"put the command after '--': nsshell {_shell_words(given)} -- {_shell_words(extra)}", USAGE
            )
        command = []
    args = parser.parse_args(argv)
    if command is not None:
        args.command = command
    if not getattr(args, "verb", None):
        parser.print_help()
        return USAGE
    if not hasattr(args, "json"):
        args.json = False
    return args.func(args)
