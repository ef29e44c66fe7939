"""Real interactive bash and zsh, driven through a pty, with the eval line in
their rc file: TAB, `vault enter`, the prompt marker, isolation, `vault
leave`, history privacy, and the user's own prompt hooks.

Each shell gets a private HOME (the `world` fixture) and nothing of the
developer's environment.  Prompts show the nesting level, `L1>` outside and
`L2>` inside, and the user's own hook rebuilds the prompt at every prompt the
way starship does, so the marker only shows if our hook really runs last.
"""

import os

import pytest

from conftest import PASSPHRASE
from conftest import need_program as _need

from .driver import Shell

pytestmark = pytest.mark.shells

SECRET_COMMAND = "echo tax-secret-$((6*7))"  # typed inside; must never reach ~/.*_history
SEED = "echo outer-seed-line"


def _base_env(world, shell_path):
    env = dict(world.env)
    env.pop("NO_COLOR")  # colours on: the marker's escape codes must not get in the way
    env.update({"TERM": "xterm-256color", "SHLVL": "0", "SHELL": shell_path, "PROMPT_TOOLKIT_NO_CPR": "1"})
    return env


def bash_shell(world, rc_extra="", shell_env="/bin/bash"):
    _need("bash")
    home = world.home
    (home / ".inputrc").write_text("set enable-bracketed-paste off\nset bell-style none\n")
    (home / ".bash_history").write_text(SEED + "\n")
    (home / ".bashrc").write_text(
        "PS1='L${SHLVL}>'\n"
        "HISTFILE=~/.bash_history HISTSIZE=1000 HISTFILESIZE=1000\n"
        # a user hook that rebuilds PS1 at every prompt, like starship
        "PROMPT_COMMAND='__upc=$((__upc+1)); PS1=\"L\\${SHLVL}>\"'\n"
        + rc_extra
        + 'eval "$(nsshell init bash)"\n'
    )
    env = _base_env(world, shell_env)
    env["INPUTRC"] = str(home / ".inputrc")
    shell = Shell(["bash", "-i"], env, home)
    shell.expect(r"L1>")
    return shell


def zsh_shell(world, compinit="before", shell_env="/bin/sh"):
    _need("zsh")
    home = world.home
    (home / ".zsh_history").write_text(SEED + "\n")
    (home / ".zshenv").write_text("unsetopt GLOBAL_RCS\n")
    compinit_line = "autoload -Uz compinit && compinit -u\n"
    (home / ".zshrc").write_text(
        "PROMPT='L%L>'\n"
        "unset zle_bracketed_paste\n"
        "HISTFILE=~/.zsh_history SAVEHIST=1000 HISTSIZE=1000\n"
        # a user hook that rebuilds PROMPT at every prompt, like a theme
        "__user_precmd() { __upc=$((__upc+1)); PROMPT='L%L>' }\n"
        "precmd_functions+=(__user_precmd)\n"
        + (compinit_line if compinit == "before" else "")
        + 'eval "$(nsshell init zsh)"\n'
        + (compinit_line if compinit == "after" else "")
    )
    shell = Shell(["zsh", "-i"], _base_env(world, shell_env), home)
    shell.expect(r"L1>")
    return shell


SHELLS = {
    "bash": (bash_shell, ".bash_history", "bash_history"),
    "zsh": (zsh_shell, ".zsh_history", "zsh_history"),
}


@pytest.mark.parametrize("kind", sorted(SHELLS))
def test_enter_work_leave(world, kind):
    start, outer_history, inner_history = SHELLS[kind]
    mountpoint = world.create("taxes")
    _names(world, "photos")  # a second name, for completion and the nesting refusal
    shell = start(world)
    try:
        out = shell.run('echo "upc=$__upc"', r"L1>")
        assert "upc=1" in out or "upc=2" in out, out  # the user's own hook ran

        # TAB completes the vault name; enter asks for the passphrase.
        shell.send("vault enter ta\t")
        shell.expect(r"vault enter taxes ")
        shell.send("\r")
        shell.expect(r"Passphrase for taxes: ")
        shell.send(PASSPHRASE + "\r")
        shell.expect(r"\[vault:taxes\] L2>")

        out = shell.run("echo in-vault:$NSSHELL_VAULT pid-ok:$(( $$ == NSSHELL_SHELL_PID ))", r"\[vault:taxes\] L2>")
        assert "in-vault:taxes pid-ok:1" in out, out
        out = shell.run('echo "upc=$__upc"', r"\[vault:taxes\] L2>")
        assert "upc=" in out and "upc=\n" not in out, out  # the user's hook runs inside too

        # A file written inside is visible inside, and not outside.
        shell.run('echo s3cr3t$((1+1)) > "$NSSHELL_MOUNTPOINT/inside.txt"', r"\[vault:taxes\] L2>")
        out = shell.run('cat "$NSSHELL_MOUNTPOINT/inside.txt"', r"\[vault:taxes\] L2>")
        assert "s3cr3t2" in out, out
        assert os.listdir(mountpoint) == []

        shell.run(SECRET_COMMAND, r"tax-secret-42")
        shell.expect(r"\[vault:taxes\] L2>")

        # Entering again from inside says what to do, and nests nothing.
        out = shell.run("vault enter photos; echo rc=$?", r"\[vault:taxes\] L2>")
        assert "leave it first with 'vault leave'" in out and "rc=2" in out, out

        # A nested shell inside may not `vault leave`.
        shell.send(kind + "\r")
        shell.expect(r"\[vault:taxes\] L3>")
        out = shell.run("vault leave; echo rc=$?", r"\[vault:taxes\] L3>")
        assert "type 'exit'" in out and "rc=1" in out, out
        shell.run("exit", r"\[vault:taxes\] L2>")

        # Leave: back outside, marker gone, status 0.
        out = shell.run("vault leave", r"L1>")
        assert "[vault:" not in out.rsplit("\n", 1)[-1], out
        out = shell.run('echo "rc=$? vault=${NSSHELL_VAULT-none}"', r"L1>")
        assert "rc=0 vault=none" in out and "[vault:" not in out, out
        shell.send("exit\r")
        assert shell.wait_exit() == 0
    finally:
        shell.close()

    # History typed inside stayed inside the vault; the outer file is intact.
    outer = (world.home / outer_history).read_text(errors="replace")
    assert SEED in outer and 'echo "upc=$__upc"' in outer, outer
    assert "tax-secret" not in outer and "s3cr3t" not in outer, outer
    inside = world.inside("taxes", f'cat "$NSSHELL_MOUNTPOINT/.nsshell/{inner_history}"').stdout
    assert "tax-secret" in inside, inside
    assert SEED not in inside, inside  # the inner shell read only the vault's own history


def _names(world, *names):
    """Vault names as completion sees them (the files nsshell keeps in sync)."""
    directory = world.home / ".config" / "nsshell" / "names"
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).touch()


def _complete(shell, typed, expected, prompt):
    shell.send(typed + "\t")
    shell.expect(expected)
    shell.send("\x15")  # ctrl-U: drop the line
    shell.run("echo cleared-$((1+1))", r"cleared-2")
    shell.expect(prompt)


@pytest.mark.parametrize(
    "kind,variant", [("bash", "string"), ("bash", "array"), ("zsh", "before"), ("zsh", "after"), ("zsh", "none")]
)
def test_tab_completion(world, kind, variant):
    """Names after a verb, for `vault` and `nsshell` alike, and after
    `run NAME --` the command like any command.  zsh: with compinit before
    the eval line, after it (compdef is retried at the first prompt), and
    never (compctl)."""
    _names(world, "taxes", "tools", "photos")
    if kind == "bash":
        extra = "PROMPT_COMMAND=(\"$PROMPT_COMMAND\")\n" if variant == "array" else ""
        shell = bash_shell(world, rc_extra=extra)
    else:
        shell = zsh_shell(world, compinit=variant)
    try:
        shell.run("true", r"L1>")  # the first prompt has been drawn, precmd hooks ran
        _complete(shell, "vault enter ta", r"vault enter taxes ", r"L1>")
        _complete(shell, "nsshell lock ph", r"nsshell lock photos ", r"L1>")
        _complete(shell, "vault ente", r"vault enter ", r"L1>")
        _complete(shell, "vault run taxes -- mkfif", r"vault run taxes -- mkfifo ", r"L1>")
        # the newer verbs, and the names after them (once neither completed)
        _complete(shell, "nsshell passw", r"nsshell passwd ", r"L1>")
        _complete(shell, "nsshell passwd ph", r"nsshell passwd photos ", r"L1>")
        _complete(shell, "nsshell keyr", r"nsshell keyring ", r"L1>")
        if variant != "none":  # compctl completes only the word after the verb
            _complete(shell, "nsshell keyring add ph", r"nsshell keyring add photos ", r"L1>")
        shell.send("exit\r")
        assert shell.wait_exit() == 0
    finally:
        shell.close()


@pytest.mark.parametrize("kind", sorted(SHELLS))
def test_forced_lock_from_elsewhere_ends_the_session(world, kind):
    """`nsshell lock --force` in another terminal hangs up the shell inside;
    the user is back outside, with no marker claiming access that is gone."""
    start = SHELLS[kind][0]
    world.create("taxes")
    world.open("taxes")
    shell = start(world)
    try:
        shell.send("vault enter taxes\r")
        shell.expect(r"\[vault:taxes\] L2>")
        result = world.run("lock", "taxes", "--force", timeout=60)
        assert result.returncode == 0, result.stderr
        shell.expect(r"L1>")
        out = shell.run('echo "vault=${NSSHELL_VAULT-none}"', r"L1>")
        assert "vault=none" in out and "[vault:" not in out, out
        shell.send("exit\r")
        assert shell.wait_exit() == 0
    finally:
        shell.close()
