"""From inside a vault, a request to a tmux or screen server outside must
never open a window outside (issue 9): inside, TMUX/STY are put aside and
the servers' socket directories are the vault's private /tmp."""

import os
import subprocess

import pytest

from shells.test_interactive import _need

pytestmark = pytest.mark.namespaces


def _outer(world, **extra):
    env = {**world.env, **extra}
    return env


def test_outside_tmux_and_screen_unreachable_from_inside(vault):
    world = vault
    _need("tmux")
    _need("screen")
    # The user's tmux outside, its socket under TMUX_TMPDIR (as many set it,
    # e.g. to $XDG_RUNTIME_DIR: a directory the vault's namespace sees, as
    # it sees /run/screen where Debian's screen keeps its sockets).
    tmux_dir = world.home / "tmuxo"
    tmux_dir.mkdir(mode=0o700)
    outer = _outer(world, TMUX_TMPDIR=str(tmux_dir))
    subprocess.run(["tmux", "-f", "/dev/null", "new-session", "-d", "-s", "outer", "sleep 600"], env=outer, check=True)
    screen_dir = world.home / "screeno"
    screen_dir.mkdir(mode=0o700)
    outer_screen = _outer(world, SCREENDIR=str(screen_dir))
    subprocess.run(["screen", "-dmS", "outerscr", "sleep", "600"], env=outer_screen, check=True)
    try:
        socket_path = subprocess.run(
            ["tmux", "display-message", "-p", "-t", "outer", "#{socket_path},#{pid},0"], env=outer,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        world.wait_until(lambda: any(n.endswith(".outerscr") for n in os.listdir(screen_dir)), timeout=60,
                         what="the outside screen session's socket")
        sty = next(name for name in os.listdir(screen_dir) if name.endswith(".outerscr"))
        # A shell inside the vault that was entered from a pane of each (TMUX/STY inherited).
        env = {"TMUX": socket_path, "TMUX_PANE": "%0", "TMUX_TMPDIR": str(tmux_dir),
               "STY": sty, "SCREENDIR": str(screen_dir)}
        marker = world.root / "outside-window"
        result = world.run(
            "run", "taxes", "--passfile", world.passfile, "--", "sh", "-c",
            f"tmux new-window 'touch {marker}'; echo tmux=$?; screen -X screen touch {marker}; echo screen=$?",
            env=env,
        )
        assert "tmux=0" not in result.stdout and "screen=0" not in result.stdout, result
        windows = subprocess.run(["tmux", "list-windows", "-t", "outer"], env=outer, capture_output=True, text=True)
        assert len(windows.stdout.strip().splitlines()) == 1, windows.stdout
        screen_windows = subprocess.run(["screen", "-S", "outerscr", "-Q", "windows"], env=outer_screen,
                                        capture_output=True, text=True)
        assert screen_windows.stdout.count("$") <= 1 and " 1 " not in screen_windows.stdout, screen_windows.stdout
    finally:
        subprocess.run(["tmux", "kill-server"], env=outer)
        subprocess.run(["screen", "-S", "outerscr", "-X", "quit"], env=outer_screen)
