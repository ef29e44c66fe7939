"""The rendered shell code, without a kernel: every `nsshell init` variant
sources silently in a strict clean shell, is shellcheck-clean (bash), and its
functions do the right thing when called directly: the prompt segment, the
PROMPT_COMMAND/precmd placement, history, completion, enter/leave refusals.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import need_program as _need

from nsshell import shells

REPO = Path(__file__).resolve().parents[2]
SHELL_DIR = REPO / "shell"
VARIANTS = [(cmd, prompt) for cmd in ("vault", "my-vault") for prompt in (True, False)]


@pytest.fixture
def home(tmp_path):
    (tmp_path / "h").mkdir()
    return tmp_path / "h"


def clean_env(home, **extra):
    env = {"HOME": str(home), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TERM": "dumb"}
    env.update(extra)
    return env


def render(tmp_path, shell, cmd="vault", prompt=True):
    path = tmp_path / f"init-{shell}-{cmd}-{int(prompt)}"
    path.write_text(shells.render_init(shell, cmd=cmd, prompt=prompt))
    return path


def run_bash(script, env, init=None):
    _need("bash")
    source = f"source {init}\n" if init else ""
    return subprocess.run(
        ["bash", "--norc", "--noprofile", "-euo", "pipefail", "-c", source + script],
        capture_output=True, text=True, env=env, timeout=30,
    )


def run_zsh(script, env, init=None):
    _need("zsh")
    source = f"source {init}\n" if init else ""
    return subprocess.run(
        ["zsh", "--no-rcs", "-eu", "-o", "pipefail", "-c", source + script],
        capture_output=True, text=True, env=env, timeout=30,
    )


RUNNERS = {"bash": run_bash, "zsh": run_zsh}

# Environments the code is sourced in: a normal shell, and one inside a vault
# (the env `nsshell enter` sets; the "mountpoint" is a plain directory here).
def where_env(home, where):
    if where == "outside":
        return clean_env(home)
    mountpoint = home / "Vaults" / "taxes"
    (mountpoint / ".nsshell").mkdir(parents=True, exist_ok=True)
    return clean_env(
        home,
        NSSHELL_VAULT="taxes",
        NSSHELL_MOUNTPOINT=str(mountpoint),
        NSSHELL_SHELL_PID="1",
        NSSHELL_HISTORY="vault",
        NSSHELL_HISTDIR=str(mountpoint / ".nsshell"),
    )


# --- every variant is silent under strict mode ------------------------------------


@pytest.mark.parametrize("where", ["outside", "inside"])
@pytest.mark.parametrize("cmd,prompt", VARIANTS)
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_sourcing_is_silent(tmp_path, home, shell, cmd, prompt, where):
    init = render(tmp_path, shell, cmd, prompt)
    # Twice: the second time is what an inner shell does after the user's rc.
    result = RUNNERS[shell](f"source {init}\n{'whence -w' if shell == 'zsh' else 'type -t'} {cmd} >/dev/null",
                           where_env(home, where), init)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_init_cli_renders_tokens(home):
    from conftest import nsshell_executable

    exe = nsshell_executable()
    for shell in ("bash", "zsh"):
        out = subprocess.run([exe, "init", shell, "--cmd", "hv", "--no-prompt"], capture_output=True, text=True,
                             env=clean_env(home), check=True).stdout
        assert "__NSSHELL_" not in out
        assert "function hv {" in out and "__nsshell_prompt=0" in out


def test_init_rejects_bad_function_names():
    from nsshell.errors import NsshellError

    for bad in ("", "-x", "a b", "a;b", "$(x)"):
        with pytest.raises(NsshellError):
            shells.render_init("bash", cmd=bad)


def _shellcheck():
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.access(found, os.X_OK):
        return _need("shellcheck")
    return found


@pytest.mark.parametrize("cmd,prompt", VARIANTS)
def test_shellcheck_rendered(tmp_path, cmd, prompt):
    init = render(tmp_path, "bash", cmd, prompt)
    result = subprocess.run([_shellcheck(), "--norc", init], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_shipped_files():
    files = sorted(str(p) for p in (SHELL_DIR / "bash").iterdir())
    result = subprocess.run([_shellcheck(), "--norc", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_zsh_files_parse():
    _need("zsh")
    for path in [SHELL_DIR / "zsh" / "nsshell.zsh", *sorted((SHELL_DIR / "zsh" / "zdotdir").glob(".z*"))]:
        result = subprocess.run(["zsh", "--no-rcs", "-n", str(path)], capture_output=True, text=True)
        assert (result.returncode, result.stderr) == (0, ""), path


def test_inner_argv_and_env_point_at_shipped_files():
    argv = shells.inner_argv("/bin/bash")
    assert Path(argv[2]).is_file() and argv[-1] == "-i"
    env = shells.inner_env("/usr/bin/zsh")
    assert (Path(env["ZDOTDIR"]) / ".zshenv").is_file() and (Path(env["ZDOTDIR"]) / ".zshrc").is_file()


# --- the prompt ----------------------------------------------------------------------

# Print what the prompt shows after the hook ran, as bash/zsh would draw it.
BASH_SHOW = 'printf "<%s>\\n" "${PS1@P}"'
ZSH_SHOW = 'print -rP -- "<$PROMPT>"'


def prompt_lines(shell, home, init, script, **env_extra):
    env = where_env(home, "inside")
    env.update(env_extra)
    result = RUNNERS[shell](script, env, init)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.replace("\x01", "").replace("\x02", "").splitlines()


def test_bash_prompt_segment(tmp_path, home):
    init = render(tmp_path, "bash")
    lines = prompt_lines("bash", home, init, f"""
PS1='p$ '
__nsshell_prompt_hook; {BASH_SHOW}
PS1='rebuilt> '; __nsshell_prompt_hook; {BASH_SHOW}      # starship / a later PS1= replaced it
__nsshell_prompt_hook; __nsshell_prompt_hook; {BASH_SHOW} # never twice
rmdir "$NSSHELL_MOUNTPOINT/.nsshell"; __nsshell_prompt_hook; {BASH_SHOW}   # the mount went away
NSSHELL_PROMPT=0; __nsshell_prompt_hook; {BASH_SHOW}
""", USER="me")
    assert lines == [
        "<\x1b[1;36m[vault:taxes] \x1b[0mp$ >",
        "<\x1b[1;36m[vault:taxes] \x1b[0mrebuilt> >",
        "<\x1b[1;36m[vault:taxes] \x1b[0mrebuilt> >",
        "<\x1b[1;31m[vault:taxes locked] \x1b[0mrebuilt> >",
        "<rebuilt> >",
    ]


def test_bash_prompt_no_color_and_dead_mount(tmp_path, home):
    init = render(tmp_path, "bash")
    lines = prompt_lines("bash", home, init, f"""
PS1='$ '; __nsshell_prompt_hook; {BASH_SHOW}
__nsshell_probe=/nonexistent/.; __nsshell_prompt_hook; {BASH_SHOW}
""", NO_COLOR="1")
    assert lines == ["<[vault:taxes] $ >", "<[vault:taxes locked] $ >"]


def test_bash_prompt_is_injection_safe(tmp_path, home):
    init = render(tmp_path, "bash")
    lines = prompt_lines("bash", home, init, f"""
PS1='$ '; NSSHELL_VAULT='$(touch pwned)`touch pwned`\\w'; __nsshell_prompt_hook; {BASH_SHOW}
""", NO_COLOR="1")
    assert lines == ["<[vault:$(touch pwned)`touch pwned`\\w] $ >"]
    assert not (home / "pwned").exists()


def test_bash_hook_keeps_status_and_goes_last_once(tmp_path, home):
    init = render(tmp_path, "bash")
    lines = prompt_lines("bash", home, init, f"""
(exit 7) || __nsshell_prompt_hook || echo "status=$?"
PROMPT_COMMAND='a; b'; source {init}; source {init}; printf '%s|' "$PROMPT_COMMAND"; echo
PROMPT_COMMAND=(a __nsshell_prompt_hook b); source {init}; printf '%s|' "${{PROMPT_COMMAND[@]}}"; echo
""")
    assert lines == ["status=7", "a; b", "__nsshell_prompt_hook|", "a|b|__nsshell_prompt_hook|"]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_prompt_untouched_outside_and_with_no_prompt(tmp_path, home, shell):
    script = {
        "bash": 'PS1="$ "; PROMPT_COMMAND=x; source {init}; printf "<%s><%s>\\n" "$PS1" "$PROMPT_COMMAND"',
        "zsh": 'PROMPT="$ "; precmd_functions=(x); source {init}; print -r -- "<$PROMPT><${{(j: :)precmd_functions}}>"',
    }[shell]
    outside = RUNNERS[shell](script.format(init=render(tmp_path, shell)), clean_env(home))
    no_prompt = RUNNERS[shell](script.format(init=render(tmp_path, shell, prompt=False)), where_env(home, "inside"))
    expect = "<$ ><x>\n" if shell == "bash" else "<$ ><x __nsshell_completion_retry>\n"
    assert (outside.stdout, outside.stderr) == (expect, "")
    assert (no_prompt.stdout, no_prompt.stderr) == (expect, "")


def test_zsh_prompt_segment(tmp_path, home):
    init = render(tmp_path, "zsh")
    lines = prompt_lines("zsh", home, init, f"""
PROMPT='%# '
precmd_functions+=(user_hook)  # a theme added after us; setup puts us last again
user_hook() {{ PROMPT='rebuilt> ' }}
__nsshell_setup_inside; print -r -- "${{(j: :)precmd_functions}}"
for f in $precmd_functions; do $f; done; {ZSH_SHOW}
__nsshell_precmd; __nsshell_precmd; {ZSH_SHOW}
rmdir "$NSSHELL_MOUNTPOINT/.nsshell"; __nsshell_precmd; {ZSH_SHOW}
NO_COLOR=1; __nsshell_precmd; {ZSH_SHOW}
NSSHELL_PROMPT=0; __nsshell_precmd; {ZSH_SHOW}
(exit 7) || __nsshell_precmd || print "status=$?"
""")
    assert lines == [
        "__nsshell_completion_retry user_hook __nsshell_precmd",
        "<\x1b[36m[vault:taxes]\x1b[39m rebuilt> >",
        "<\x1b[36m[vault:taxes]\x1b[39m rebuilt> >",
        "<\x1b[31m[vault:taxes locked]\x1b[39m rebuilt> >",
        "<[vault:taxes locked] rebuilt> >",
        "<rebuilt> >",
        "status=7",
    ]


@pytest.mark.parametrize("subst", ["setopt prompt_subst", "unsetopt prompt_subst"])
def test_zsh_prompt_is_injection_safe(tmp_path, home, subst):
    init = render(tmp_path, "zsh")
    lines = prompt_lines("zsh", home, init, f"""
{subst}; PROMPT='$ '
NSSHELL_VAULT='$(touch pwned)`touch pwned`%~\\'; __nsshell_precmd; {ZSH_SHOW}
""", NO_COLOR="1")
    assert lines == ["<[vault:$(touch pwned)`touch pwned`%~\\] $ >"]
    assert not (home / "pwned").exists()


# --- history -------------------------------------------------------------------------

HISTORY_CASES = [
    # (NSSHELL_HISTORY, make the history dir, expected HISTFILE relative to HOME or a word)
    ("vault", True, "Vaults/taxes/.nsshell/{name}"),
    ("vault", False, "unset"),  # never fall back to the outer file
    ("off", True, "unset"),
    ("outer", True, ".{name}"),
    ("bogus", True, "unset"),
    (None, True, "Vaults/taxes/.nsshell/{name}"),  # `nsshell run NAME -- bash`
    (None, False, "unset"),
]


@pytest.mark.parametrize("mode,histdir,expected", HISTORY_CASES)
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_history_file_inside(tmp_path, home, shell, mode, histdir, expected):
    env = where_env(home, "inside")
    if not histdir:
        os.rmdir(env.pop("NSSHELL_HISTDIR"))
    if mode is None:
        del env["NSSHELL_HISTORY"]
        env.pop("NSSHELL_HISTDIR", None)
    else:
        env["NSSHELL_HISTORY"] = mode
    name = f"{shell}_history"
    script = f'HISTFILE=$HOME/.{name}; source {render(tmp_path, shell)}; echo "${{HISTFILE-unset}}"'
    result = RUNNERS[shell](script, env)
    assert result.stderr == ""
    shown = result.stdout.strip().replace(str(home) + "/", "")
    assert shown == expected.format(name=name)


# --- the command: passthrough, enter, leave -------------------------------------------


def stub_render(tmp_path, shell, cmd="vault", status=0):
    """The init code with a stub nsshell that prints its arguments."""
    stub = tmp_path / "stub-nsshell"
    stub.write_text(f'#!/bin/sh\necho "nsshell $*"\nexit {status}\n')
    stub.chmod(0o755)
    text = (SHELL_DIR / shell / f"nsshell.{shell}").read_text()
    path = tmp_path / f"stub-init.{shell}"
    path.write_text(text.replace("__NSSHELL_EXE__", str(stub)).replace("__NSSHELL_CMD__", cmd)
                    .replace("__NSSHELL_PROMPT__", "1"))
    return path


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_verbs_pass_through(tmp_path, home, shell):
    init = stub_render(tmp_path, shell, status=3)
    result = RUNNERS[shell]('vault status --json "a b" || echo "rc=$?"', clean_env(home), init)
    assert (result.stdout, result.stderr) == ("nsshell status --json a b\nrc=3\n", "")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_enter_runs_the_cli_with_our_shell(tmp_path, home, shell):
    init = stub_render(tmp_path, shell, status=5)
    own = shutil.which(shell)
    same = RUNNERS[shell]('vault enter taxes || echo "rc=$?"', clean_env(home, SHELL=own), init)
    other = RUNNERS[shell]('vault enter taxes --passfile p || echo "rc=$?"', clean_env(home, SHELL="/bin/sh"), init)
    # nsshell's fast path, and nothing after it: `enter` itself says what keeps the vault open (docs/context.md)
    assert (same.stdout, same.stderr) == ("nsshell enter taxes\nrc=5\n", "")
    assert other.stderr == ""
    words = other.stdout.split()
    assert words[:3] == ["nsshell", "enter", "--shell"] and words[4:] == ["taxes", "--passfile", "p", "rc=5"]
    assert os.path.realpath(words[3]) == os.path.realpath(own)


@pytest.mark.parametrize("cmd", ["vault", "hv"])
@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_enter_inside_says_leave_first(tmp_path, home, shell, cmd):
    init = stub_render(tmp_path, shell, cmd=cmd)
    result = RUNNERS[shell](f'{cmd} enter photos || echo "rc=$?"', where_env(home, "inside"), init)
    assert result.stdout == "rc=2\n"  # the CLI was not called
    assert result.stderr == (f"nsshell: you are inside vault 'taxes'; leave it first with '{cmd} leave', "
                             f"then run '{cmd} enter photos'\n")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_leave(tmp_path, home, shell):
    init = stub_render(tmp_path, shell)
    outside = RUNNERS[shell]('vault leave || echo "rc=$?"', clean_env(home), init)
    assert (outside.stdout, outside.stderr) == ("rc=1\n", "nsshell: not inside a vault; nothing to leave\n")
    nested = RUNNERS[shell]('vault leave || echo "rc=$?"', where_env(home, "inside"), init)  # pid 1 is not us
    assert nested.stdout == "rc=1\n" and "type 'exit' to return to it, then 'vault leave'" in nested.stderr
    env = where_env(home, "inside")
    mine = RUNNERS[shell]('NSSHELL_SHELL_PID=$$; vault leave 4; echo "not reached"', env, init)
    assert (mine.returncode, mine.stdout, mine.stderr) == (4, "", "")


# --- completion (bash; zsh's compsys needs a live zle: see test_interactive) ----------

BASH_COMPLETE = """
comp() {
    COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
    __nsshell_complete
    printf '%s,' "${COMPREPLY[@]}"; echo
}
"""

BASH_COMPLETIONS = [
    (["vault", ""], "create,enter,run,open,lock,list,status,ps,remove,add,passwd,keyring,doctor,init,leave,help,"),
    (["nsshell", ""], "create,enter,run,open,lock,list,status,ps,remove,add,passwd,keyring,doctor,init,"),
    (["vault", "e"], "enter,"),
    (["vault", "enter", "t"], "taxes,tools,"),
    (["vault", "enter", "ta"], "taxes,"),
    (["nsshell", "ps", ""], "photos,taxes,tools,"),
    (["vault", "enter", "zz"], ","),
    (["vault", "enter", "taxes", ""], ","),
    (["vault", "create", ""], ","),
    (["vault", "lock", "--"], "--all,--force,"),
    (["vault", "run", "--passfile", "f", "p"], "photos,"),
    (["vault", "run", "taxes", ""], "--,"),
    (["vault", "run", "taxes", "--", "mkfif"], "mkfifo,"),
    (["vault", "init", "z"], "zsh,"),
    (["vault", "--"], "--help,--version,--json,"),
]


@pytest.mark.parametrize("words,expected", BASH_COMPLETIONS)
def test_bash_completion(tmp_path, home, words, expected):
    names = home / ".config" / "nsshell" / "names"
    names.mkdir(parents=True)
    for name in ("taxes", "tools", "photos"):
        (names / name).touch()
    line = " ".join(f"'{w}'" for w in words)
    result = run_bash(f"{BASH_COMPLETE}\nshopt -s failglob\ncomp {line}", clean_env(home), render(tmp_path, "bash"))
    got = [word for word in result.stdout.strip().split(",") if word]
    assert result.stderr == ""
    assert list(dict.fromkeys(got)) == [word for word in expected.split(",") if word]  # compgen -c repeats


def test_bash_completion_follows_xdg_config_home(tmp_path, home):
    names = tmp_path / "cfg" / "nsshell" / "names"
    names.mkdir(parents=True)
    (names / "elsewhere").touch()
    env = clean_env(home, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    result = run_bash(f"{BASH_COMPLETE}\ncomp vault open ''", env, render(tmp_path, "bash"))
    assert (result.stdout.strip(), result.stderr) == ("elsewhere,", "")


# --- the inner shells' rc files, for a user whose rc has no eval line ---------------


def venv_path():
    return f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"


def test_inner_bashrc_without_eval_line(home):
    _need("bash")
    (home / ".bashrc").write_text("HISTFILE=~/.bash_history\nPROMPT_COMMAND='user_hook'\nalias ll='ls -l'\n")
    env = where_env(home, "inside")
    env["PATH"] = venv_path()
    script = ('type -t vault; echo "$HISTFILE"; printf "%s|" "$PROMPT_COMMAND"; echo; alias ll; '
              'declare -f vault | grep -c "/nsshell "')
    result = subprocess.run(["bash", "--rcfile", shells.inner_argv("bash")[2], "-i", "-c", script],
                            capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert result.stdout.splitlines() == [
        "function",
        f"{home}/Vaults/taxes/.nsshell/bash_history",
        "user_hook",
        "__nsshell_prompt_hook|",
        "alias ll='ls -l'",
        "1",  # the nsshell found on PATH, by absolute path
    ], result.stderr


def test_inner_bashrc_does_not_shadow_a_vault_program(tmp_path, home):
    _need("bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "vault").write_text("#!/bin/sh\n")
    (bin_dir / "vault").chmod(0o755)
    env = where_env(home, "inside")
    env["PATH"] = f"{bin_dir}:{venv_path()}"
    result = subprocess.run(["bash", "--rcfile", shells.inner_argv("bash")[2], "-i", "-c", "type -t vault nsshell"],
                            capture_output=True, text=True, env=env, timeout=30, stdin=subprocess.DEVNULL)
    assert result.stdout.split() == ["file", "function"], result.stderr


ZSH_PROBE = 'print -r -- "${FROM_ENV-}|${HISTFILE-}|${ZDOTDIR-unset}|$(whence -w vault)|${precmd_functions[-1]}|${aliases[ll]-}"'


@pytest.mark.parametrize("layout", ["home", "zdotdir-env", "zdotdir-set-in-zshenv"])
def test_inner_zdotdir(tmp_path, home, layout):
    _need("zsh")
    user_dir = home / "zd"
    user_dir.mkdir()
    rc = "HISTFILE=~/.zsh_history\nalias ll='ls -l'\nprecmd_functions+=(user_hook)\n"
    user_zdotdir = ""
    if layout == "home":
        (home / ".zshenv").write_text("FROM_ENV=1\n")
        (home / ".zshrc").write_text(rc)
    elif layout == "zdotdir-env":
        user_zdotdir = str(user_dir)
        (user_dir / ".zshenv").write_text("FROM_ENV=1\n")
        (user_dir / ".zshrc").write_text(rc)
    else:
        (home / ".zshenv").write_text(f"FROM_ENV=1\nZDOTDIR={user_dir}\n")
        (user_dir / ".zshrc").write_text(rc)
    env = where_env(home, "inside")
    env["PATH"] = venv_path()
    env.update(shells.inner_env("zsh"))
    env["NSSHELL_USER_ZDOTDIR"] = user_zdotdir
    result = subprocess.run(["zsh", "-i", "-c", ZSH_PROBE], capture_output=True, text=True, env=env, timeout=30,
                            stdin=subprocess.DEVNULL)
    shown_zdotdir = "unset" if layout == "home" else str(user_dir)
    assert result.stdout.strip() == (f"1|{home}/Vaults/taxes/.nsshell/zsh_history|{shown_zdotdir}|vault: function|"
                                     "__nsshell_precmd|ls -l"), result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_function_replaces_an_alias_of_its_name(tmp_path, home, shell):
    script = {
        "bash": "shopt -s expand_aliases; alias vault='echo aliased'; source {init}; type -t vault",
        "zsh": "alias vault='echo aliased'; source {init}; whence -w vault",
    }[shell].format(init=render(tmp_path, shell))
    result = RUNNERS[shell](script, clean_env(home))
    assert (result.stdout.split()[-1], result.stderr) == ("function", "")
