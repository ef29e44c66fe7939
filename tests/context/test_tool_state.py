"""What is done inside a vault stays inside it (issue 9): real programs,
driven through a pty inside `vault enter`, then a scan of the host's HOME
(outside the ciphertext), /tmp and /var/tmp.

The canary strings are typed or written inside the vault only.  Each check
also finds the canary where it should be (in the vault's copy), so a
program that wrote nothing at all cannot make the test pass."""

import os
import secrets

import pytest

from conftest import PASSPHRASE

from shells.driver import Shell
from shells.test_interactive import _base_env, _need

from .scan import scan

pytestmark = pytest.mark.shells

PROMPT_IN = r"\[vault:taxes\] L2>"


def start_bash(world, extra_env=None):
    _need("bash")
    home = world.home
    (home / ".inputrc").write_text("set enable-bracketed-paste off\nset bell-style none\n")
    (home / ".bashrc").write_text("PS1='L${SHLVL}>'\nHISTFILE=~/.bash_history\n" 'eval "$(nsshell init bash)"\n')
    env = _base_env(world, "/bin/bash")
    env["INPUTRC"] = str(home / ".inputrc")
    env.update(extra_env or {})
    shell = Shell(["bash", "-i"], env, home)
    shell.expect(r"L1>")
    return shell


def enter(shell):
    shell.send("vault enter taxes\r")
    shell.expect(r"Passphrase for taxes: ")
    shell.send(PASSPHRASE + "\r")
    shell.expect(PROMPT_IN)


def test_tool_state_temp_files_and_servers_stay_inside(world):
    for program in ("vim", "less", "sqlite3", "python3", "sort", "tmux"):
        _need(program)
    token = secrets.token_hex(4)  # unique per run: other tests share this machine's /tmp
    canary = {what: f"cnry{token}{what}" for what in ("vim", "less", "py", "sql", "sort", "tmp", "tmux", "name")}
    secret_name = f"notes-{canary['name']}.txt"
    mountpoint = world.create("taxes")
    # The user's own state outside, some present and some not: it must stay exactly as it was.
    outer_files = {".python_history": "outer-python-line\n", ".lesshst": ".less-history-file:\n.search\n\"outer\n"}
    for name, text in outer_files.items():
        (world.home / name).write_text(text)
    before = {name: os.stat(world.home / name) for name in outer_files}
    outer_tmp = world.root / "outer-tmp"  # a TMPDIR pointing outside /tmp, as many users set it
    outer_tmp.mkdir()
    tmux_outside = f"/tmp/tmux-{os.getuid()}"
    tmux_outside_before = set(os.listdir(tmux_outside)) if os.path.isdir(tmux_outside) else set()

    shell = start_bash(world, {"TMPDIR": str(outer_tmp)})
    try:
        enter(shell)
        notes = f'"$NSSHELL_MOUNTPOINT/{secret_name}"'
        shell.run(f"printf 'alpha\\n{canary['vim']}-line\\nbeta\\n' > {notes}", PROMPT_IN)

        # vim: a search and a yank (both go to viminfo), then quit.
        shell.send(f"vim -N {notes}\r")
        shell.expect(r"beta")
        shell.send(f"/{canary['vim']}\r")
        shell.send("yy:wq\r")
        shell.expect(PROMPT_IN)

        # less: a search (goes to .lesshst).
        shell.send(f"less {notes}\r")
        shell.expect(r"alpha")
        shell.send(f"/{canary['less']}\r")
        shell.send("q")
        shell.expect(PROMPT_IN)

        # A python REPL: a typed line with a password in it.
        shell.send("python3 -q\r")
        shell.expect(r">>> ")
        shell.send(f"pw = '{canary['py']}'\r")
        shell.expect(r">>> ")
        shell.send("\x04")
        shell.expect(PROMPT_IN)

        # The sqlite3 shell.
        shell.send('sqlite3 "$NSSHELL_MOUNTPOINT/db.sqlite"\r')
        shell.expect(r"sqlite> ")
        shell.send(f"select '{canary['sql']}-account';\r")
        shell.expect(r"-account\s")
        shell.send(".quit\r")
        shell.expect(PROMPT_IN)

        # TMPDIR pointed outside: corrected to the vault's own /tmp.
        out = shell.run('echo "tmpdir=$TMPDIR"', PROMPT_IN)
        assert "tmpdir=/tmp\n" in out, out

        # sort with a small buffer spills to temporary files while it reads.
        shell.run(
            f"(seq 1 200000 | sed 's/^/{canary['sort']}-/'; sleep 4) | sort -S 64K > /dev/null &", PROMPT_IN
        )
        out = shell.run("sleep 2; echo spills=$(ls /tmp | grep -c '^sort'); wait", PROMPT_IN)
        assert "spills=0" not in out and "spills=" in out, out  # it did spill: the check below means something

        # A temp file left behind.
        shell.run(f"t=$(mktemp); echo {canary['tmp']} > \"$t\"; echo left=$t", PROMPT_IN)

        # tmux started inside: its server and socket are the vault's own; a
        # second window opened from inside lands inside too.
        shell.run("tmux -f /dev/null new-session -d -s work 'sleep 600'", PROMPT_IN)
        shell.run(
            f"tmux new-window -t work 'echo {canary['tmux']} $NSSHELL_VAULT > \"$NSSHELL_MOUNTPOINT/from-tmux\"; sleep 600'",
            PROMPT_IN,
        )
        out = shell.run('sleep 1; cat "$NSSHELL_MOUNTPOINT/from-tmux"; ls -d /tmp/tmux-*', PROMPT_IN)
        assert f"{canary['tmux']} taxes" in out, out

        # Leave with the tmux server still running: the vault stays open for it.
        # It says so, and names what keeps it open.
        shell.send("vault leave\r")
        found = shell.expect(r"(\d+) process(es)? still inside taxes \(([^)]*)\); it stays open until")
        assert "tmux: server" in found.group(3), found.group(0)
        shell.expect(r"'nsshell lock taxes --force'")
        shell.expect(r"L1>")
        assert world.state("taxes")["state"] == "open"
        shell.send("exit\r")
        shell.wait_exit()
    finally:
        shell.close()

    # Outside, nobody reaches the vault's tmux server.
    assert (set(os.listdir(tmux_outside)) if os.path.isdir(tmux_outside) else set()) == tmux_outside_before

    # The vault's own copies got what the programs wrote (the scan below is not vacuous).
    state = world.inside("taxes", 'cat "$NSSHELL_MOUNTPOINT"/.nsshell/home/.viminfo '
                         '"$NSSHELL_MOUNTPOINT"/.nsshell/home/.lesshst "$NSSHELL_MOUNTPOINT"/.nsshell/home/.python_history '
                         '"$NSSHELL_MOUNTPOINT"/.nsshell/home/.sqlite_history').stdout
    for what in ("vim", "less", "py", "sql"):
        assert canary[what] in state, (what, state)
    assert secret_name in state  # viminfo names the file

    world.run("run", "taxes", "--", "tmux", "kill-server")
    world.run("lock", "taxes", "--force", check=True)

    # The scan: the host's HOME outside the ciphertext, /tmp and /var/tmp.
    hits = scan([world.home, "/tmp", "/var/tmp"], list(canary.values()), skip=[world.cipher_dir("taxes")])
    assert hits == [], hits
    # The user's own files outside are exactly as they were.
    for name, text in outer_files.items():
        assert (world.home / name).read_text() == text
        assert os.stat(world.home / name).st_mtime_ns == before[name].st_mtime_ns
    for name in (".viminfo", ".sqlite_history"):
        assert not (world.home / name).exists(), name
    assert os.listdir(mountpoint) == []
