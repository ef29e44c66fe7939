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


def test_requests_to_outside_servers_get_one_line_from_nsshell(world):
    """Through a pty, in `vault enter` from a pane of an outside tmux (and
    screen): every way of asking an outside server for a window gets one
    line from nsshell, and no window opens outside."""
    from shells.test_interactive import _base_env
    from shells.driver import Shell
    from conftest import PASSPHRASE

    _need("tmux")
    _need("screen")
    _need("bash")
    world.create("taxes")
    tmux_dir = world.home / "tmuxo"
    tmux_dir.mkdir(mode=0o700)
    outer = _outer(world, TMUX_TMPDIR=str(tmux_dir))
    subprocess.run(["tmux", "-f", "/dev/null", "new-session", "-d", "-s", "outer", "sleep 600"], env=outer, check=True)
    screen_dir = world.home / "screeno"
    screen_dir.mkdir(mode=0o700)
    outer_screen = _outer(world, SCREENDIR=str(screen_dir))
    subprocess.run(["screen", "-dmS", "outerscr", "sleep", "600"], env=outer_screen, check=True)
    shell = None
    try:
        socket_path = subprocess.run(
            ["tmux", "display-message", "-p", "-t", "outer", "#{socket_path}"], env=outer,
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        world.wait_until(lambda: any(n.endswith(".outerscr") for n in os.listdir(screen_dir)), timeout=60,
                         what="the outside screen session's socket")
        sty = next(name for name in os.listdir(screen_dir) if name.endswith(".outerscr"))
        home = world.home
        (home / ".inputrc").write_text("set enable-bracketed-paste off\nset bell-style none\n")
        (home / ".bashrc").write_text("PS1='L${SHLVL}>'\n" 'eval "$(nsshell init bash)"\n')
        env = _base_env(world, "/bin/bash")
        env.update({"INPUTRC": str(home / ".inputrc"), "TMUX": f"{socket_path},1,0", "TMUX_PANE": "%0",
                    "TMUX_TMPDIR": str(tmux_dir), "STY": sty, "SCREENDIR": str(screen_dir)})
        shell = Shell(["bash", "-i"], env, home)
        shell.expect(r"L1>")
        shell.send("vault enter taxes\r")
        shell.expect(r"Passphrase for taxes: ")
        shell.send(PASSPHRASE + "\r")
        prompt = r"\[vault:taxes\] L2>"
        shell.expect(prompt)
        marker = world.root / "outside-window"
        attempts = {
            # TMUX and STY were put aside: tmux and screen look in the vault's /tmp.
            f"tmux new-window 'touch {marker}'": "no tmux server runs inside vault taxes",
            f"screen -X screen touch {marker}": "no screen session runs inside vault taxes",
            # A start-up file that sets the directories back, or an explicit socket.
            f"TMUX_TMPDIR={tmux_dir} tmux new-window 'touch {marker}'": f"the tmux server at {socket_path} (pid",
            f"tmux -S {socket_path} split-window 'touch {marker}'": "runs outside vault taxes",
            f"SCREENDIR={screen_dir} screen -X screen touch {marker}": f"the screen session {sty} runs outside vault taxes",
        }
        for command, words in attempts.items():
            out = shell.run(command + "; echo status=$?", prompt)
            lines = [line for line in out.splitlines()[1:]
                     if line.strip() and not line.startswith("status=") and "[vault:taxes]" not in line]
            assert len(lines) == 1 and lines[0].startswith("nsshell: ") and words in lines[0], (command, out)
            assert "status=1" in out, out
        # The vault's own tmux and screen work as before.
        out = shell.run("tmux -f /dev/null new-session -d -s inner 'sleep 60' && tmux new-window -t inner 'sleep 60'"
                        " && tmux list-windows -t inner | wc -l; tmux kill-server", prompt)
        assert "\n2" in out, out
        shell.send("exit\r")
        shell.expect(r"L1>")
        shell.send("exit\r")
        shell.wait_exit()
        assert not marker.exists()
        windows = subprocess.run(["tmux", "list-windows", "-t", "outer"], env=outer, capture_output=True, text=True)
        assert len(windows.stdout.strip().splitlines()) == 1, windows.stdout
        screen_windows = subprocess.run(["screen", "-S", "outerscr", "-Q", "windows"], env=outer_screen,
                                        capture_output=True, text=True)
        assert " 1 " not in screen_windows.stdout, screen_windows.stdout
    finally:
        if shell is not None:
            shell.close()
        subprocess.run(["tmux", "kill-server"], env=outer)
        subprocess.run(["screen", "-S", "outerscr", "-X", "quit"], env=outer_screen)
