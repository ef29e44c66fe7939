"""Issue 13: a newcomer's first ten minutes.  The `vault` usage in all three
shells, the CLI's errors and help, nsshell(1), the fast rc line and its
freshness check, the launcher's -S start, doctor's gocryptfs warning, and a
real `pipx install` used the way the README says, through a pty."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import need_program as _need

from nsshell import cli, doctor, shells

REPO = Path(__file__).resolve().parent.parent


def _env(home, **extra):
    env = {"HOME": str(home), "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
           "LANG": "C.UTF-8", "TERM": "dumb"}
    env.update(extra)
    return env


def _cli(*args, home):
    return subprocess.run([str(Path(sys.executable).parent / "nsshell"), *args], capture_output=True, text=True,
                          env=_env(home), timeout=60)


# --- the vault function's own usage -----------------------------------------------------


def _xonsh_usage():
    sys.path.insert(0, str(REPO))
    try:
        import importlib

        module = importlib.import_module("xontrib.nsshell")
        return module._help_text()
    finally:
        sys.path.remove(str(REPO))


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_vault_usage_is_its_own_and_the_same_in_every_shell(tmp_path, shell):
    _need(shell)
    init = tmp_path / "init"
    init.write_text(shells.render_init(shell))
    argv = [shell, "--norc", "-c"] if shell == "bash" else [shell, "-f", "-c"]
    bare = subprocess.run(argv + [f". {init}; vault"], capture_output=True, text=True, env=_env(tmp_path), timeout=30)
    helped = subprocess.run(argv + [f". {init}; vault help"], capture_output=True, text=True, env=_env(tmp_path),
                            timeout=30)
    assert bare.returncode == 2 and bare.stdout == ""
    assert helped.returncode == 0 and helped.stderr == ""
    assert bare.stderr == helped.stdout == _xonsh_usage()
    assert helped.stdout.startswith("usage: vault COMMAND") and "leave" in helped.stdout
    assert "usage: nsshell" not in helped.stdout


# --- errors and help ---------------------------------------------------------------------


def test_mistyped_command_gets_did_you_mean(tmp_path):
    result = _cli("lsit", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "nsshell: unknown command 'lsit'; did you mean 'list'?\n"


@pytest.mark.parametrize("typo, verb", [("paswd", "passwd"), ("keyrng", "keyring"), ("ad", "add")])
def test_every_verb_gets_did_you_mean(tmp_path, typo, verb):
    # VERBS once missed add, passwd and keyring: their typos got no hint.
    result = _cli(typo, "v", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"nsshell: unknown command '{typo}'; did you mean '{verb}'?\n"


def test_verbs_lists_every_verb_of_the_parser():
    choices = next(a for a in cli._parser()._actions if a.dest == "verb").choices
    assert set(cli.VERBS) == set(choices) - {"left"}  # 'left' is the shell integration's, not in --help


@pytest.mark.parametrize("args", [["--help"], ["list"], ["doctor"], ["init", "bash"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, args):
    # `nsshell doctor | head -2` once ended with a BrokenPipeError traceback.
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has gone before nsshell writes
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "nsshell"), *args], stdout=write_end,
                                stderr=subprocess.PIPE, text=True, env=_env(tmp_path), timeout=120)
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 128 + 13  # as if killed by SIGPIPE, like cat(1)


def test_a_taken_mountpoint_says_how_to_choose_another(tmp_path):
    (tmp_path / "Vaults" / "full").mkdir(parents=True)
    (tmp_path / "Vaults" / "full" / "keep.txt").write_text("mine")
    result = _cli("create", "full", "--passfile", "/dev/null", home=tmp_path)
    assert result.returncode == 7
    assert result.stderr == (f"nsshell: mountpoint {tmp_path}/Vaults/full exists and is not an empty directory; "
                             "choose another with --mountpoint DIR\n")
    assert (tmp_path / "Vaults" / "full" / "keep.txt").read_text() == "mine"


def test_run_without_dashdash_says_where_the_command_goes(tmp_path):
    result = _cli("run", "v", "--passfile", "-", "echo", "hi", home=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "nsshell: put the command after '--': nsshell run v --passfile - -- echo hi\n"


def test_subcommand_help_explains_positionals(tmp_path):
    run = _cli("run", "--help", home=tmp_path).stdout
    assert "NAME -- COMMAND [ARG...]" in run.splitlines()[0]
    assert "NAME               the vault's name" in run
    for verb in cli.VERBS:
        text = _cli(verb, "--help", home=tmp_path).stdout
        if "positional arguments:\n" not in text:
            continue
        positionals = text.split("positional arguments:\n")[1].split("\n\n")[0]
        assert all(len(line.split(None, 1)) == 2 for line in positionals.splitlines()), text


def test_json_is_in_the_help_of_each_verb_that_has_it(tmp_path):
    for verb in ("list", "status", "ps", "doctor", "create"):
        assert "--json" in _cli(verb, "--help", home=tmp_path).stdout, verb
    assert "--json" not in _cli("enter", "--help", home=tmp_path).stdout  # accepted, but it prints no JSON


def test_an_empty_stdin_for_passfile_dash_is_named_as_such(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "nsshell"), "run", "nosuchvault", "--passfile", "-", "--",
                          "true"], capture_output=True, text=True, env=_env(tmp_path), stdin=subprocess.DEVNULL,
                         timeout=60)
    assert out.returncode != 0
    from nsshell.errors import NsshellError
    from nsshell.passphrase import read_passfile

    with open(os.devnull, "rb") as empty:
        saved = os.dup(0)
        os.dup2(empty.fileno(), 0)
        try:
            with pytest.raises(NsshellError) as error:
                read_passfile("-")
        finally:
            os.dup2(saved, 0)
            os.close(saved)
    assert str(error.value).startswith("standard input (--passfile -) gave no passphrase"), error.value


def test_long_status_lists_wrap_between_items(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    items = ["~/.viminfo", "~/.lesshst (environment LESSHISTFILE)", "~/.local/share/recently-used.xbel"] * 8
    cli._print_list("shadowed:", items)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("  shadowed:   ~/.viminfo") and all(line.startswith(" " * 14) for line in lines[1:])
    assert [item.strip() for item in " ".join(lines).split("shadowed:")[1].split(",")] == items


def test_man_page_is_generated_from_the_parser_and_current():
    from nsshell import manpage

    shipped = (REPO / "share" / "man" / "man1" / "nsshell.1").read_text()
    assert shipped == manpage.render(), "regenerate: python -m nsshell.manpage > share/man/man1/nsshell.1"
    for verb in cli.VERBS:
        assert f".SS {verb}\n" in shipped
    if shutil.which("man"):
        out = subprocess.run(["man", "-l", "-Tutf8", "-Z", str(REPO / "share/man/man1/nsshell.1")],
                             capture_output=True, text=True, env={"LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"})
        assert out.returncode == 0 and out.stderr == ""


# --- the rc line: a file while it is fresh, Python only when it is not ----------------------


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_rc_line_sources_the_cache_and_refreshes_it_when_stale(tmp_path, shell):
    _need(shell)
    home = tmp_path / "h"
    home.mkdir()
    log = tmp_path / "runs"
    # An nsshell on PATH that logs each start, then runs the real one.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real = Path(sys.executable).parent / "nsshell"
    (bindir / "nsshell").write_text(f'#!/bin/sh\necho run >> {log}\nexec {real} "$@"\n')
    (bindir / "nsshell").chmod(0o755)
    env = _env(home, PATH=f"{bindir}:/usr/local/bin:/usr/bin:/bin")
    line = shells.rc_line(shell)
    argv = [shell, "--norc", "-c"] if shell == "bash" else [shell, "-f", "-c"]
    check = f"{line}\ntype __nsshell_enter >/dev/null && echo loaded"

    def start():
        result = subprocess.run(argv + [check], capture_output=True, text=True, env=env, timeout=60)
        assert (result.stdout, result.stderr) == ("loaded\n", "")
        return log.read_text().count("run") if log.exists() else 0

    assert start() == 1  # no cache yet: the eval ran nsshell, which wrote the cache
    cache = home / ".cache" / "nsshell" / f"init.{shell}"
    assert cache.is_file() and (cache.stat().st_mode & 0o777) == 0o600
    assert start() == 1 and start() == 1  # fresh: sourced, no nsshell started
    # An upgrade: nsshell's own copy is newer than the cache.  Older than
    # the template, whenever the checkout was last touched (not "an hour ago").
    old = min(time.time(), os.stat(shells.template_path(shell)).st_mtime) - 3600
    os.utime(cache, (old, old))
    assert start() == 2  # stale: the eval ran again...
    assert cache.stat().st_mtime > old + 60  # ...and wrote the file anew
    assert start() == 2


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_rc_line_inside_a_vault_sources_the_vaults_cache(vault, shell):
    """Inside a vault XDG_CACHE_HOME is the vault's (GUI state, issue 11), and
    that is where the rc line looks.  `nsshell init` once wrote the file to
    the host's cache instead, so every shell started inside (each `vault
    enter`) started Python for the eval: 20-25 ms each time."""
    _need(shell)
    log = vault.home / "runs"  # under HOME: the vault's /tmp is its own
    bindir = vault.home / "bin"
    bindir.mkdir()
    (bindir / "nsshell").write_text(f'#!/bin/sh\necho run >> {log}\nexec {vault.exe} "$@"\n')
    (bindir / "nsshell").chmod(0o755)
    vault.open("taxes")
    argv = [shell, "--norc", "-c"] if shell == "bash" else [shell, "-f", "-c"]
    check = f"{shells.rc_line(shell)}\ntype __nsshell_enter >/dev/null && echo loaded"
    env = {"PATH": f"{bindir}:{vault.env['PATH']}"}

    def start():
        result = vault.run("run", "taxes", "--", *argv, check, env=env, check=True)
        assert (result.stdout, result.stderr) == ("loaded\n", "")
        return log.read_text().count("run") if log.exists() else 0

    assert start() == 1  # the vault's cache is empty: the eval ran nsshell, which wrote it
    cache = vault.mountpoint("taxes") / ".nsshell" / "home" / ".cache" / "nsshell" / f"init.{shell}"
    assert vault.run("run", "taxes", "--", "test", "-f", cache).returncode == 0  # seen from inside
    assert start() == 1 and start() == 1  # then sourced: no Python in the shells that follow


def test_rc_line_in_the_readme_is_the_one_nsshell_writes_for():
    readme = (REPO / "README.md").read_text()
    for shell in ("bash", "zsh"):
        assert shells.rc_line(shell) in readme


def test_help_shows_the_readme_rc_line(tmp_path):
    # nsshell --help once showed only eval "$(nsshell init bash)", a Python start per new shell.
    text = _cli("--help", home=tmp_path).stdout
    assert shells.rc_line("bash") in text


# --- the launcher: -S where it is safe, site otherwise --------------------------------------


def _venv_install(root):
    """A venv's layout with nsshell in its own site-packages, as pipx makes
    it: bin/nsshell (the launcher), bin/nsshell-python, bin/python3."""
    venv = root / "venv"
    lib = venv / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    lib.mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {Path(sys.base_prefix) / 'bin'}\n")
    shutil.copytree(REPO / "nsshell", lib / "nsshell")
    shutil.copytree(REPO / "shell", lib / "nsshell" / "shell")  # as the wheel ships it
    (venv / "bin").mkdir()
    base_python = Path(sys.base_prefix) / "bin" / ("python%d.%d" % sys.version_info[:2])
    os.symlink(base_python, venv / "bin" / "python3")
    script = (REPO / "bin" / "nsshell-python").read_text().replace("#!python", f"#!{venv / 'bin' / 'python3'}", 1)
    (venv / "bin" / "nsshell-python").write_text(script)
    shutil.copy(REPO / "bin" / "nsshell", venv / "bin" / "nsshell")
    for name in ("nsshell", "nsshell-python"):
        (venv / "bin" / name).chmod(0o755)
    return venv


def test_launcher_starts_python_without_site_and_falls_back(tmp_path):
    """bin/nsshell reads the interpreter from bin/nsshell-python's first line
    and starts it with -S; nsshell-python adds a venv's site-packages, or
    runs site.main() when nsshell is not there (this editable install)."""
    exe = Path(sys.executable).parent / "nsshell"
    result = subprocess.run([str(exe), "init", "bash"], capture_output=True, text=True, env=_env(tmp_path),
                            timeout=60)
    assert result.returncode == 0 and "__nsshell_enter" in result.stdout
    # A venv layout with nsshell in its own site-packages: no site module.
    venv = _venv_install(tmp_path)
    probe = subprocess.run([str(venv / "bin" / "nsshell"), "init", "bash"], capture_output=True, text=True,
                           env=_env(tmp_path), timeout=60)
    assert probe.returncode == 0, probe.stderr
    # The rendered code calls nsshell the same fast way.
    assert f"{venv / 'bin' / 'python3'} -S {venv / 'bin' / 'nsshell-python'}" in probe.stdout


# --- the hot path imports no os ----------------------------------------------------------------


def _imported(importtime_stderr):
    """Module names from python -X importtime's lines ("import time: 95 | 95 |   _stat")."""
    return {line.rsplit("|", 1)[1].strip() for line in importtime_stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2} - {"imported package"}


HOT_PATH_MODULES = ("nsshell.entry", "nsshell.inside", "nsshell.stateenv", "nsshell.client", "nsshell.kernel", "nsshell.paths",
                    "nsshell.shells")


def test_the_hot_path_modules_import_no_os():
    """Importing os costs more than the rest of `nsshell run` on an open
    vault (docs/benchmarks.md): the modules of `run` and `enter` use posix
    and nsshell.lightos.  Fails as soon as one of them imports os at module
    level again."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import " + ", ".join(HOT_PATH_MODULES) + \
        "; print('os' in sys.modules, sorted(m for m in sys.modules if m.startswith('nsshell')))"
    result = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded_os, modules = result.stdout.split(" ", 1)
    assert all(name in modules for name in HOT_PATH_MODULES)  # the probe did import them
    assert loaded_os == "False", "a module on the hot path imports os: " + modules


def test_run_on_an_open_vault_starts_no_site_and_no_os(vault, tmp_path):
    """A real `nsshell run` through the launcher of a pipx-style install, on
    an open vault: Python's own record of its imports (-X importtime,
    through PYTHONPROFILEIMPORTTIME) shows the client joined without the
    site module, os, argparse or nsshell.cli, and the command ran inside."""
    vault.open("taxes")
    venv = _venv_install(tmp_path)
    result = subprocess.run([str(venv / "bin" / "nsshell"), "run", "taxes", "--", "sh", "-c", 'echo "in $NSSHELL_VAULT"'],
                            capture_output=True, text=True, env={**vault.env, "PYTHONPROFILEIMPORTTIME": "1"},
                            cwd=vault.home, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "in taxes\n"
    modules = _imported(result.stderr)
    assert "nsshell.client" in modules and "_socket" in modules  # this process joined the vault
    assert "site" not in modules and "os" not in modules, sorted(modules)
    assert "nsshell.cli" not in modules and "argparse" not in modules, sorted(modules)


# --- doctor ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version, status", [("v2.3", "warn"), ("v2.3.2", "warn"), ("v2.4.0", "ok"), ("v2.5", "ok")])
def test_doctor_warns_about_the_hardlink_size_bug(monkeypatch, tmp_path, version, status):
    fake = tmp_path / "gocryptfs"
    fake.write_text(f"#!/bin/sh\necho 'gocryptfs {version}; go-fuse v2.2.0; 2023-01-01 go1.19 linux/amd64'\n")
    fake.chmod(0o755)
    from nsshell.backend import BACKEND

    monkeypatch.setattr(BACKEND, "binary", lambda: str(fake))
    check = doctor.check_gocryptfs()
    assert check.status == status
    if status == "warn":
        assert "git clone --no-hardlinks" in check.fix and "#724" in check.detail


def test_launcher_and_cleanup_script_are_shellcheck_clean():
    checker = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not os.access(checker, os.X_OK):
        _need("shellcheck")
    result = subprocess.run([checker, "--norc", "-x", "bin/nsshell", "scripts/cleanup"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_cached_file_with_its_guard_sources_silently_in_a_strict_shell(tmp_path, shell):
    _need(shell)
    home = tmp_path / "h"
    home.mkdir()
    result = subprocess.run([str(Path(sys.executable).parent / "nsshell"), "init", shell], capture_output=True,
                            text=True, env=_env(home), timeout=60)
    assert result.returncode == 0
    cache = home / ".cache" / "nsshell" / f"init.{shell}"
    argv = [shell, "--norc", "--noprofile", "-euo", "pipefail", "-c"] if shell == "bash" else \
        [shell, "-f", "-euo", "pipefail", "-c"]
    sourced = subprocess.run(argv + [f". {cache} && type __nsshell_enter >/dev/null && echo ok"],
                             capture_output=True, text=True, env=_env(home), timeout=30)
    assert (sourced.stdout, sourced.stderr) == ("ok\n", "")
