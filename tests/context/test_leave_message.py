"""When a session ends, nsshell says what keeps the vault open (issue 9):
for a plain `nsshell enter NAME` (no shell integration) and for xonsh's
`vault leave`, through a pty."""

import sys
from pathlib import Path

import pytest

from conftest import PASSPHRASE

from shells.driver import Shell
from shells.test_interactive import _base_env, _need

pytestmark = pytest.mark.shells

LEFT = (r"1 process still inside taxes \(sleep\); it stays open until it ends; "
        r"see 'nsshell ps taxes', or 'nsshell lock taxes --force'")
# A process that outlives the session, whatever the shell does with its jobs.
LINGER = "bash -c 'setsid sleep 600 </dev/null >/dev/null 2>&1 &'"


def test_plain_enter_says_what_keeps_the_vault_open(vault):
    world = vault
    _need("bash")
    (world.home / ".bashrc").write_text("PS1='P>'\n")  # no shell integration loaded outside
    env = _base_env(world, "/bin/bash")

    shell = Shell([world.exe, "enter", "taxes"], env, world.home)
    try:
        shell.expect(r"Passphrase for taxes: ")
        shell.send(PASSPHRASE + "\r")
        shell.expect(r"\[vault:taxes\] P>")
        shell.run("echo in-vault:$NSSHELL_VAULT", r"in-vault:taxes")
        shell.send(LINGER + "\r")
        shell.send("exit 3\r")
        shell.expect(LEFT)
        assert shell.wait_exit() == 3  # the shell's own status
    finally:
        shell.close()
    assert world.state("taxes")["state"] == "open"
    world.run("lock", "taxes", "--force", check=True, timeout=60)

    # Nothing left inside: nothing said, and the vault locks.
    shell = Shell([world.exe, "enter", "taxes"], env, world.home)
    try:
        shell.expect(r"Passphrase for taxes: ")
        shell.send(PASSPHRASE + "\r")
        shell.expect(r"\[vault:taxes\] P>")
        shell.run("echo in-vault:$NSSHELL_VAULT", r"in-vault:taxes")
        shell.send("exit\r")
        assert shell.wait_exit() == 0
        assert "still inside" not in shell.raw
    finally:
        shell.close()


XONSH = Path(sys.executable).parent / "xonsh"


def test_xonsh_vault_leave_says_what_keeps_the_vault_open(vault):
    world = vault
    if not XONSH.exists():
        pytest.fail(f"xonsh is not installed next to {sys.executable} (the test extra installs it)")
    (world.home / ".xonshrc").write_text(
        "$PROMPT = 'L{$SHLVL}>'\n$AUTO_SUGGEST = False\nxontrib load nsshell\n"
    )
    env = {**_base_env(world, str(XONSH)), "XONTRIBS_AUTOLOAD_DISABLED": "1", "NO_COLOR": "1"}
    shell = Shell([str(XONSH), "-i"], env, world.home)
    try:
        shell.expect(r"L1>")
        shell.send("vault enter taxes\r")
        shell.expect(r"Passphrase for taxes: ")
        shell.send(PASSPHRASE + "\r")
        shell.expect(r"\[vault:taxes\] L2>")
        shell.send(LINGER + "\r")
        shell.expect(r"\[vault:taxes\] L2>")
        shell.send("vault leave\r")
        shell.expect(LEFT)
        shell.expect(r"L1>")
        shell.send("exit\r")
        shell.wait_exit()
    finally:
        shell.close()
    world.run("lock", "taxes", "--force", check=True, timeout=60)
