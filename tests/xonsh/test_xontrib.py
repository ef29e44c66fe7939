"""The xontrib in-process, with xonsh's own pytest fixtures (xession,
load_xontrib, check_completer): load/unload, the alias's commands, the
prompt fields, history routing and completion.  No namespaces needed."""

import os
import sys

import pytest

from nsshell import shells

MODULE = "xontrib.nsshell"


def live():
    """The loaded module: `xontrib unload` drops it from sys.modules, and
    each load imports it afresh."""
    return sys.modules[MODULE]


def unload():
    """Undo a load.  (Not `xontrib unload`: that also drops the module from
    sys.modules, which the load_xontrib fixture's teardown does itself.)"""
    module = sys.modules.get(MODULE)
    if module is not None and module._active is not None:
        module._unload_xontrib_(module._active.xsh)


@pytest.fixture
def xsh(xession, tmp_path):
    xession.env["HOME"] = str(tmp_path)
    xession.env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    yield xession
    unload()


@pytest.fixture
def loaded(xsh, load_xontrib):
    xsh.env["PROMPT"] = "L{$SHLVL}>"
    load_xontrib("nsshell")
    assert live()._active is not None, "the xontrib failed to load (see stderr)"
    return xsh


def names(tmp_path, *vault_names):
    directory = tmp_path / "config" / "nsshell" / "names"
    directory.mkdir(parents=True, exist_ok=True)
    for name in vault_names:
        (directory / name).touch()


def command_of(xsh, line):
    """What `line` runs: the vault alias returns a command (return_command)."""
    return xsh.aliases.get(line.split())


def handlers(xsh):
    events = xsh.builtins.events
    return {
        name: [h for h in getattr(events, name) if getattr(h, "nsshell", False)]
        for name in ("on_post_rc", "on_post_init", "on_pre_prompt_format")
    }


# --- load / unload -----------------------------------------------------------------------


def test_xontrib_load_installs_and_xontrib_unload_removes_everything(xsh):
    """The user's path: `xontrib load nsshell` / `xontrib unload nsshell`."""
    from xonsh.xontribs import xontribs_load, xontribs_unload

    xsh.env["PROMPT"] = "L{$SHLVL}>"
    xontribs_load(["nsshell"])
    assert getattr(sys.modules.get(MODULE), "_active", None) is not None, "load failed (see stderr)"
    assert "vault" in xsh.aliases
    assert "vault" in xsh.env["PROMPT_FIELDS"] and "nsshell_vault" in xsh.env["PROMPT_FIELDS"]
    assert "nsshell_vault" in xsh.completers
    assert list(xsh.completers).index("nsshell_vault") < list(xsh.completers).index("alias") if "alias" in xsh.completers else True
    assert xsh.env["PROMPT"] == "{vault}L{$SHLVL}>"
    assert any(handlers(xsh).values())

    xontribs_unload(["nsshell"])

    assert MODULE not in sys.modules
    assert "vault" not in xsh.aliases and "_nsshell_vault_say" not in xsh.aliases
    assert "vault" not in xsh.env["PROMPT_FIELDS"] and "nsshell_vault" not in xsh.env["PROMPT_FIELDS"]
    assert "nsshell_vault" not in xsh.completers
    assert xsh.env["PROMPT"] == "L{$SHLVL}>"
    assert not any(handlers(xsh).values())


def test_an_xonsh_too_old_for_return_command_gets_one_line_and_no_alias(xsh, load_xontrib, monkeypatch, capsys):
    # Debian 12's xonsh 0.13 printed the alias's command ("_nsshell_vault_say0") instead of running it.
    from xonsh.aliases import Aliases

    monkeypatch.delattr(Aliases, "return_command")
    load_xontrib("nsshell")
    assert live()._active is None
    assert "vault" not in xsh.aliases
    err = capsys.readouterr().err
    assert err.startswith("nsshell: this xonsh") and "0.18" in err and err.count("\n") == 1, err


def test_import_alone_changes_nothing(xsh):
    import importlib

    before = (dict(xsh.aliases), list(xsh.completers), dict(xsh.env["PROMPT_FIELDS"]), xsh.env["PROMPT"])
    sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    assert module._active is None
    assert (dict(xsh.aliases), list(xsh.completers), dict(xsh.env["PROMPT_FIELDS"]), xsh.env["PROMPT"]) == before


def test_prompt_opt_out_and_existing_field_are_respected(xsh, load_xontrib):
    xsh.env["PROMPT"] = "L>"
    xsh.env["NSSHELL_PROMPT"] = "0"
    load_xontrib("nsshell")
    assert xsh.env["PROMPT"] == "L>"
    unload()

    del xsh.env["NSSHELL_PROMPT"]
    xsh.env["PROMPT"] = "{user} {nsshell_vault:[{}] }> "
    load_xontrib("nsshell")
    assert xsh.env["PROMPT"] == "{user} {nsshell_vault:[{}] }> "


def test_unload_leaves_a_prompt_the_user_changed_since(loaded):
    loaded.env["PROMPT"] = "mine>"
    unload()
    assert loaded.env["PROMPT"] == "mine>"


# --- the alias ---------------------------------------------------------------------------


def test_verbs_run_nsshell_with_the_arguments(loaded):
    exe = command_of(loaded, "vault list --json")[0]
    assert os.path.basename(exe) == "nsshell"
    for line in ("vault list --json", "vault run taxes -- ls -l", "vault lock --all --force", "vault create x"):
        assert command_of(loaded, line) == [exe, *line.split()[1:]]


def test_enter_flushes_history_and_starts_this_xonsh(loaded):
    class History:
        flushes = 0

        def flush(self, at_exit=False):
            History.flushes += 1

    loaded.history = History()
    cmd = command_of(loaded, "vault enter taxes")
    assert cmd[1:3] == ["enter", "taxes"]
    assert cmd[3] == "--shell" and os.path.basename(cmd[4]).startswith("xonsh")
    assert History.flushes == 1
    assert command_of(loaded, "vault enter taxes --shell /bin/zsh")[2:] == ["taxes", "--shell", "/bin/zsh"]


def say_of(cmd):
    """(status, stream, text) of a message the alias returns as its command
    (the helper alias, resolved by xonsh to its function), printed by the
    helper itself: the text is never an argument xonsh could expand."""
    import io

    assert cmd[0] == "_nsshell_vault_say" or getattr(cmd[0], "__name__", None) == "say", cmd
    out, err = io.StringIO(), io.StringIO()
    code = live()._active.say(list(cmd[1:]), stdout=out, stderr=err)
    assert code == int(cmd[1])
    return code, cmd[2], out.getvalue() + err.getvalue()


def test_help_unknown_verb_and_no_arguments(loaded):
    code, stream, text = say_of(command_of(loaded, "vault help"))
    assert (code, stream) == (0, "out")
    assert text.startswith("usage: vault COMMAND") and "  enter NAME " in text and "  leave " in text
    assert say_of(command_of(loaded, "vault frobnicate"))[:2] == (2, "err")
    assert say_of(loaded.aliases.get("vault"))[:2] == (2, "err")


def test_say_prints_and_returns_the_status(loaded, capsys):
    import io

    out, err = io.StringIO(), io.StringIO()
    say = loaded.aliases["_nsshell_vault_say"]
    command = live()._active.message(3, "err", "boom $PROMPT {vault}")
    assert "boom" not in " ".join(command)  # the text is not an argument
    assert say(command[1:], stdout=out, stderr=err) == 3
    assert (out.getvalue(), err.getvalue()) == ("", "boom $PROMPT {vault}\n")


def test_leave_exits_only_the_shell_enter_started(loaded):
    assert say_of(command_of(loaded, "vault leave"))[:2] == (1, "err")  # not in a vault
    loaded.env["NSSHELL_VAULT"] = "taxes"
    loaded.env["NSSHELL_SHELL_PID"] = str(os.getpid() + 1)
    code, _, text = say_of(command_of(loaded, "vault leave"))
    assert code == 1 and "exit" in text and str(os.getpid() + 1) in text
    loaded.env["NSSHELL_SHELL_PID"] = str(os.getpid())
    assert command_of(loaded, "vault leave")[0] in ("exit",) or callable(command_of(loaded, "vault leave")[0])


# --- prompt ------------------------------------------------------------------------------


def field(xsh, name):
    return xsh.env["PROMPT_FIELDS"][name]()


def test_prompt_fields_outside_inside_locked_and_no_color(loaded, tmp_path):
    assert field(loaded, "vault") is None and field(loaded, "nsshell_vault") is None
    loaded.env["NSSHELL_VAULT"] = "taxes"
    loaded.env["NSSHELL_MOUNTPOINT"] = "/"  # a mount point, as the vault's is inside
    assert field(loaded, "nsshell_vault") == "taxes"
    assert field(loaded, "vault") == "{BOLD_YELLOW}[vault:taxes]{RESET} "
    loaded.env["NO_COLOR"] = "1"
    assert field(loaded, "vault") == "[vault:taxes] "
    loaded.env["NSSHELL_MOUNTPOINT"] = str(tmp_path)  # a plain directory: the mount is gone
    assert field(loaded, "vault") == "[vault:taxes locked] "  # the word bash and zsh use
    loaded.env["NSSHELL_VAULT"] = "{RED}x"  # not a vault name: never printed
    assert "{RED}" not in field(loaded, "vault") and field(loaded, "nsshell_vault") is None


def test_prompt_segment_comes_back_inside_a_vault(xsh, load_xontrib):
    xsh.env["PROMPT"] = "L>"
    xsh.env["NSSHELL_VAULT"] = "taxes"
    load_xontrib("nsshell")
    xsh.env["PROMPT"] = "replaced>"  # e.g. a later rc line or starship
    xsh.builtins.events.on_pre_prompt_format.fire()
    assert xsh.env["PROMPT"] == "{vault}replaced>"


# --- history -----------------------------------------------------------------------------


@pytest.fixture
def inside(loaded, tmp_path):
    histdir = tmp_path / "vault" / ".nsshell"
    histdir.mkdir(parents=True)
    loaded.env.update(
        NSSHELL_VAULT="taxes",
        NSSHELL_MOUNTPOINT="/",  # ismount('/') holds, like the vault's mountpoint inside
        NSSHELL_HISTORY="vault",
        NSSHELL_HISTDIR=str(histdir),
        XONSH_HISTORY_FILE=str(tmp_path / "outer" / "xonsh-outer.json"),
        XONSH_DATA_DIR=str(tmp_path / "outer"),
    )
    return loaded, histdir


def integration():
    return live()._active


def test_history_goes_into_the_vault(inside):
    xsh, histdir = inside
    xsh.env["XONSH_HISTORY_BACKEND"] = "sqlite"
    integration().route_history()
    assert xsh.env["XONSH_DATA_DIR"] == str(histdir / "xonsh")
    assert "XONSH_HISTORY_FILE" not in xsh.env or not xsh.env.get("XONSH_HISTORY_FILE")
    assert xsh.env["XONSH_HISTORY_BACKEND"] == "sqlite"
    assert (histdir / "xonsh").is_dir() and (histdir / "xonsh").stat().st_mode & 0o077 == 0


def test_history_restores_the_backend_nsshell_switched_off(inside):
    xsh, _ = inside
    xsh.env["XONSH_HISTORY_BACKEND"] = "dummy"
    xsh.env["NSSHELL_XONSH_HISTORY_BACKEND"] = "sqlite"
    integration().route_history()
    assert xsh.env["XONSH_HISTORY_BACKEND"] == "sqlite"


@pytest.mark.parametrize(
    "change",
    [
        {"NSSHELL_HISTORY": "off"},
        {"NSSHELL_HISTORY": ""},  # e.g. `nsshell run NAME -- xonsh`: no history place given
        {"NSSHELL_MOUNTPOINT": "/nonexistent-mountpoint"},  # not really inside
    ],
)
def test_history_off_when_there_is_no_safe_place(inside, change):
    xsh, histdir = inside
    xsh.env.update(change)
    integration().route_history()
    assert xsh.env["XONSH_HISTORY_BACKEND"] == "dummy"
    assert not (histdir / "xonsh").exists()


def test_history_outer_is_left_alone(inside, tmp_path):
    xsh, _ = inside
    xsh.env["NSSHELL_HISTORY"] = "outer"
    integration().route_history()
    assert xsh.env["XONSH_DATA_DIR"] == str(tmp_path / "outer")


@pytest.fixture
def restore_history(xession):
    saved = xession.history
    yield
    xession.history = saved


def test_history_built_outside_the_vault_is_switched_off(inside, tmp_path, capsys, restore_history):
    xsh, histdir = inside
    integration().route_history()

    class Leaky:
        filename = str(tmp_path / "outer" / "xonsh-outer.json")

    xsh.history = Leaky()
    integration().check_history()
    assert type(xsh.history).__name__ == "DummyHistory"
    assert "outside the vault" in capsys.readouterr().err

    class Inside:
        filename = str(histdir / "xonsh" / "history_json" / "xonsh-1.json")

    kept = Inside()
    xsh.history = kept
    integration().check_history()
    assert xsh.history is kept


def test_history_json_backend_really_writes_into_the_vault(inside):
    """The real json backend, constructed the way xonsh's Shell does."""
    from xonsh.history.main import construct_history

    xsh, histdir = inside
    integration().route_history()
    hist = construct_history(env=xsh.env.detype(), ts=[0, None], locked=True, filename=xsh.env.get("XONSH_HISTORY_FILE"), backend="json", gc=False)
    assert str(hist.filename).startswith(str(histdir / "xonsh") + "/")


# --- completion --------------------------------------------------------------------------


def test_every_verb_of_the_cli_passes_through_vault(loaded):
    """`vault passwd taxes` in xonsh, as in bash and zsh; `init` is for rc files."""
    from nsshell import cli

    assert set(cli.VERBS) - {"init"} <= set(live().VERBS)


def test_complete_verbs(loaded, check_completer):
    assert check_completer("vault", prefix="") >= set(live().VERBS) | {"help"}
    assert check_completer("vault", prefix="st") == {"status"}


def test_complete_vault_names(loaded, check_completer, tmp_path):
    names(tmp_path, "taxes", "travel", "work")
    assert check_completer("vault enter", prefix="t") == {"taxes", "travel"}
    assert check_completer("vault run", prefix="") == {"taxes", "travel", "work"}
    assert check_completer("vault lock --force", prefix="w") == {"work"}
    assert check_completer("vault enter --passfile pw", prefix="w") == {"work"}
    assert not check_completer("vault enter taxes", prefix="") & {"taxes", "travel", "work"}  # one name only


def test_complete_options(loaded, check_completer):
    assert check_completer("vault lock", prefix="--") == {"--all", "--force"}
    assert check_completer("vault run taxes", prefix="--p") == {"--passfile"}


def test_complete_after_run_dashdash_completes_commands(loaded, check_completer, mock_executables_in):
    mock_executables_in(["zzfirst-tool", "zzsecond-tool"])
    assert {"zzfirst-tool", "zzsecond-tool"} <= check_completer("vault run taxes --", prefix="zz")


def test_complete_without_names_directory(loaded, check_completer):
    assert check_completer("vault enter", prefix="zz") == set()


# --- nsshell init xonsh ------------------------------------------------------------------


def test_init_xonsh_code_loads_the_xontrib_without_nsshell_importable(xsh, monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", [str(Path(sys.executable).parent / "nsshell")])
    code = shells.render_init("xonsh")
    sys.modules.pop(MODULE, None)
    monkeypatch.setitem(sys.modules, "xontrib.nsshell", None)  # as under pipx: not importable
    namespace = {"__xonsh__": xsh}
    exec(compile(code, "nsshell-init", "exec"), namespace)
    assert "vault" in xsh.aliases
    exe = xsh.aliases.get(["vault", "list"])[0]
    assert os.path.isabs(exe) and os.path.basename(exe) == "nsshell"
    assert [k for k in namespace if not k.startswith("__")] == []  # nothing left in the user's context
