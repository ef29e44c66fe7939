"""The README's way in: `pipx install .`, then the rc lines it gives for
bash, zsh and xonsh, each driven through a pty.  nsshell lives in pipx's
own venv, which xonsh cannot import: the xonsh line must work anyway.

Needs pipx (apt: scripts/lib.sh installs it) and the package index that
scripts/test's own venv is built from; the install runs once per session."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_program as _need

from .driver import Shell

pytestmark = pytest.mark.shells

REPO = Path(__file__).resolve().parents[2]
XONSH = Path(sys.executable).parent / "xonsh"


@pytest.fixture(scope="session")
def pipx_world(tmp_path_factory):
    pipx = _need("pipx")
    root = tmp_path_factory.mktemp("pipx")
    env = {
        "HOME": str(root / "h"), "PATH": f"{root / 'bin'}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
        "PIPX_HOME": str(root / "pipx"), "PIPX_BIN_DIR": str(root / "bin"),
    }
    (root / "h").mkdir()
    source = root / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", "__pycache__", ".git"))
    result = subprocess.run([pipx, "install", str(source)], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return root, env


def _shell(root, env, argv, rc_name, rc_text, **extra):
    home = root / "h"
    (home / rc_name).write_text(rc_text)
    (home / ".inputrc").write_text("set enable-bracketed-paste off\n")
    shell_env = dict(env, TERM="xterm-256color", SHLVL="0", INPUTRC=str(home / ".inputrc"),
                     PROMPT_TOOLKIT_NO_CPR="1", XONTRIBS_AUTOLOAD_DISABLED="1", **extra)
    return Shell(argv, shell_env, home)


def _readme_line(marker):
    readme = (REPO / "README.md").read_text().splitlines()
    return readme[readme.index(marker) + 1]


@pytest.mark.parametrize("kind", ["bash", "zsh", "xonsh"])
def test_pipx_install_and_the_readme_rc_line(pipx_world, kind):
    root, env = pipx_world
    if kind == "bash":
        shell = _shell(root, env, [_need("bash"), "-i"], ".bashrc", "PS1='L${SHLVL}>'\n" + _readme_line("# ~/.bashrc") + "\n")
        prompt = r"L1>"
    elif kind == "zsh":
        (root / "h" / ".zshenv").write_text("unsetopt GLOBAL_RCS\n")
        shell = _shell(root, env, [_need("zsh"), "-i"], ".zshrc",
                       "PROMPT='L%L>'\nunset zle_bracketed_paste\n" + _readme_line("# ~/.zshrc") + "\n")
        prompt = r"L1>"
    else:
        if not XONSH.exists():
            pytest.fail(f"xonsh is not installed at {XONSH} (the test extra installs it)")
        shell = _shell(root, env, [str(XONSH), "-i"], ".xonshrc",
                       "$PROMPT = 'L{$SHLVL}>'\n$AUTO_SUGGEST = False\n" + _readme_line("# ~/.xonshrc") + "\n")
        prompt = r"L1>"
    try:
        shell.expect(prompt, timeout=60)
        # Wait for the output itself: prompt_toolkit redraws the prompt as it echoes.
        shell.send("vault help\r")
        shell.expect(r"usage: vault COMMAND \[ARGS\.\.\.\]")
        start = shell.pos
        shell.expect(r"  help +this text")
        assert "{" not in shell.since(start) and "$" not in shell.since(start)  # nothing expanded (xonsh)
        shell.send("vault list\r")
        shell.expect(r"no vaults yet")
        shell.send("vault lsit\r")
        shell.expect(r"did you mean 'list'\?")
        shell.expect(prompt)
    finally:
        shell.close()
    if kind != "xonsh":
        cache = root / "h" / ".cache" / "nsshell" / f"init.{kind}"
        assert cache.is_file()
        # The cached code calls pipx's Python directly, without site.
        assert "/venvs/nsshell/bin/python -S " in cache.read_text()


def test_man_finds_the_page_beside_the_bin_directory(pipx_world):
    """The wheel puts nsshell.1 in PREFIX/share/man/man1, and man-db looks
    there for any PREFIX/bin on PATH: the pipx venv here, ~/.local for
    pip --user."""
    root, env = pipx_world
    _need("man")
    venv = root / "pipx" / "venvs" / "nsshell"
    page = venv / "share" / "man" / "man1" / "nsshell.1"
    assert page.is_file()
    found = subprocess.run(["man", "-w", "nsshell"], capture_output=True, text=True,
                           env=dict(env, PATH=f"{venv / 'bin'}:/usr/bin:/bin"))
    assert found.stdout.strip() == str(page), found.stderr


def test_pipx_nsshell_creates_unlocks_runs_and_locks(pipx_world):
    """The installed command end to end: the client starts without site (a
    venv), and the holder it starts finds nsshell too."""
    root, env = pipx_world
    runtime = root / "run"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(env, XDG_RUNTIME_DIR=str(runtime))
    passfile = root / "pass"
    passfile.write_text("pipx test passphrase\n")
    nsshell = str(root / "bin" / "nsshell")

    def run(*args):
        return subprocess.run([nsshell, *args], env=env, capture_output=True, text=True, timeout=120, cwd=root)

    assert run("create", "px", "--passfile", str(passfile)).returncode == 0
    opened = run("open", "px", "--passfile", str(passfile), "-q")  # starts a holder
    assert opened.returncode == 0, opened.stderr
    first = run("run", "px", "--", "sh", "-c", "echo in:$NSSHELL_VAULT > ~/Vaults/px/f; cat ~/Vaults/px/f")
    assert (first.returncode, first.stdout) == (0, "in:px\n"), first.stderr
    again = run("run", "px", "--", "cat", str(root / "h" / "Vaults" / "px" / "f"))
    assert (again.returncode, again.stdout) == (0, "in:px\n"), again.stderr
    assert not (root / "h" / "Vaults" / "px" / "f").exists()  # outside the vault: empty
    assert run("lock", "px").returncode == 0
