"""A real interactive xonsh through a pty: TAB completes a vault name,
`vault enter` asks the passphrase and lands inside with the indicator,
what is written inside is invisible outside, `vault leave` returns, and
the commands typed inside stay out of the outer history.

Two xonsh starts in all (outer and inner), per SHELL-FACTS "Driving real
shells in tests"."""

import re
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE

pexpect = pytest.importorskip("pexpect")

pytestmark = pytest.mark.shells

XONSH = Path(sys.executable).parent / "xonsh"
TIMEOUT = 30

_ESCAPES = re.compile(
    r"\x1b\[[0-9;?]*[ -/]*[@-~]"  # CSI (colours, cursor moves, erase)
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC (titles, cwd reports)
    r"|\x1b[()][A-Za-z0-9]|\x1b[=>78]"
)


def clean(raw):
    """Terminal output as text: escapes dropped, cursor-forward moves as
    spaces (prompt_toolkit draws spaces that way), \\r and backspaces gone."""
    text = re.sub(r"\x1b\[(\d*)C", lambda m: " " * int(m.group(1) or 1), raw)
    text = _ESCAPES.sub("", text)
    return text.replace("\r", "").replace("\b", "")


class Screen:
    """Accumulates a child's output; `wait` looks for text after the last match."""

    def __init__(self, child):
        self.child = child
        self.raw = ""
        self.pos = 0

    def wait(self, pattern, timeout=TIMEOUT):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(clean(self.raw), self.pos)
            if match:
                self.pos = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout}s; output so far:\n{clean(self.raw)[-3000:]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                match = regex.search(clean(self.raw), self.pos)
                if match:
                    self.pos = match.end()
                    return match
                raise AssertionError(f"xonsh exited before {pattern!r}; output:\n{clean(self.raw)[-3000:]}")

    def prompt(self, level, vault=None):
        """Wait for the prompt `L<level>>`, with `[vault:NAME] ` before it or nothing."""
        match = self.wait(r"(\[vault:[^\]]*\] )?L%d>" % level)
        assert match.group(1) == (f"[vault:{vault}] " if vault else None), match.group(0)

    def line(self, text):
        self.child.send(text + "\r")


@pytest.fixture(params=["json", "sqlite"])
def xonsh_world(world, request):
    if not XONSH.exists():
        pytest.skip(f"xonsh is not installed next to {sys.executable}")
    world.create("taxes")
    (world.home / ".xonshrc").write_text(
        "$PROMPT = 'L{$SHLVL}>'\n"
        "$AUTO_SUGGEST = False\n"
        f"$XONSH_HISTORY_BACKEND = '{request.param}'\n"
        "xontrib load nsshell\n"
    )
    env = {
        **world.env,
        "SHELL": str(XONSH),
        "SHLVL": "0",
        "TERM": "xterm-256color",
        "PROMPT_TOOLKIT_NO_CPR": "1",
        "XONTRIBS_AUTOLOAD_DISABLED": "1",
    }
    child = pexpect.spawn(
        str(XONSH), ["-i"], env=env, cwd=str(world.home), encoding="utf-8", dimensions=(40, 200), timeout=TIMEOUT
    )
    try:
        yield world, Screen(child)
    finally:
        child.close(force=True)


def outer_history(world):
    """The text of every history file of the outer xonsh (plain HOME).
    xonsh's lazy JSON nests the commands; searching the text is enough."""
    data = world.home / ".local" / "share" / "xonsh"
    files = [p for p in sorted(data.rglob("*")) if p.is_file() and "history" in str(p.relative_to(data))]
    return "\n".join(p.read_text(errors="replace") for p in files)


def test_enter_inside_and_leave(xonsh_world):
    world, screen = xonsh_world
    mountpoint = world.mountpoint("taxes")

    screen.prompt(1)
    screen.line("echo outer-@(40+1)")
    screen.wait("outer-41")
    screen.prompt(1)

    # TAB completes the vault name (a single candidate is inserted).
    screen.child.send("vault enter ta\t")
    screen.wait("vault enter taxes")
    screen.line("")
    screen.wait("Passphrase for taxes: ")
    screen.child.sendline(PASSPHRASE)
    screen.prompt(2, vault="taxes")

    screen.line(f"cd {mountpoint}")
    screen.prompt(2, vault="taxes")
    screen.line("echo secret-@(6*7) > inside.txt; cat inside.txt")
    screen.wait("secret-42")
    screen.prompt(2, vault="taxes")
    assert list(mountpoint.iterdir()) == [], "the vault's files are visible outside it"

    screen.line("vault leave")
    screen.prompt(1)
    screen.line("echo back-@(1+1) $NSSHELL_VAULT")  # $NSSHELL_VAULT is unset again outside
    screen.wait(r"back-2 \$NSSHELL_VAULT|back-2 \n")
    screen.prompt(1)
    screen.line("exit")
    screen.child.expect(pexpect.EOF)

    inner = world.inside("taxes", "grep -rl 'secret-@(6\\*7)' .nsshell/xonsh", cwd=mountpoint, check=False).stdout
    assert inner.strip(), "the inner xonsh's history is not in the vault"
    outer = outer_history(world)
    assert "outer-@(40+1)" in outer, "the outer history was not recorded (so the next check proves nothing)"
    assert "secret" not in outer and "inside.txt" not in outer, "commands typed inside reached the outer history"
