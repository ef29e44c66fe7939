"""Unit tests of the parts that need no kernel: names, registry, paths, CLI parsing."""

import os
import stat

import pytest

from nsshell import errors, names, paths, registry
from nsshell.entry import main
from nsshell.errors import NsshellError


@pytest.fixture
def xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return tmp_path


@pytest.mark.parametrize("name", ["taxes", "a", "2025", "tax-2025.v2", "A_b", "x" * 64])
def test_valid_names(name):
    assert names.name_problem(name) is None


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "empty"),
        ("../x", "start"),
        ("a/b", "only letters"),
        ("-rf", "start"),
        (".hidden", "start"),
        ("two words", "only letters"),
        ("new\nline", "only letters"),
        ("x" * 65, "64 bytes"),
        ("café", "only letters"),
    ],
)
def test_invalid_names(name, reason):
    assert reason in names.name_problem(name)
    with pytest.raises(NsshellError) as caught:
        names.check_name(name)
    assert caught.value.code == errors.USAGE
    assert "\n" not in str(caught.value)  # one line, even for a name with a newline


def test_xdg_paths_follow_environment(xdg):
    assert paths.registry_file() == str(xdg / "config" / "nsshell" / "vaults.toml")
    assert paths.default_cipher_dir("t") == str(xdg / "data" / "nsshell" / "vaults" / "t")
    assert paths.default_mountpoint("t") == str(xdg / "Vaults" / "t")
    assert paths.runtime_base() == str(xdg / "run" / "nsshell")


def test_relative_xdg_values_are_ignored(xdg, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert paths.config_dir() == str(xdg / ".config" / "nsshell")


def test_runtime_dir_is_created_private(xdg):
    path = paths.runtime_dir()
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    assert mode == 0o700


def test_runtime_dir_with_loose_mode_is_refused(xdg):
    path = xdg / "run" / "nsshell"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    with pytest.raises(NsshellError, match="chmod 700") as caught:
        paths.runtime_dir()
    assert caught.value.code == errors.UNSAFE


def test_runtime_dir_symlink_is_refused(xdg, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (xdg / "run" / "nsshell").symlink_to(target)
    with pytest.raises(NsshellError, match="symbolic link"):
        paths.runtime_dir()


def test_fallback_runtime_dir_without_xdg(xdg, monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert paths.runtime_dir() == str(tmp_path / f"nsshell-{os.getuid()}")


def _vault(name="taxes", **kw):
    return registry.Vault(name=name, cipher_dir=f"/c/{name}", mountpoint=f"/m/{name}", **kw)


def test_registry_round_trip(xdg):
    registry.add(_vault("taxes", linger=300, extpass="ssh-askpass"))
    registry.add(_vault("medical"))
    loaded = registry.load()
    assert loaded["taxes"] == _vault("taxes", linger=300, extpass="ssh-askpass")
    assert loaded["medical"] == _vault("medical")
    assert sorted(os.listdir(registry.names_dir())) == ["medical", "taxes"]
    registry.remove("medical")
    assert list(registry.load()) == ["taxes"]
    assert os.listdir(registry.names_dir()) == ["taxes"]


def test_registry_strings_with_quotes_survive(xdg):
    odd = registry.Vault(name="odd", cipher_dir='/c/with "quotes" and \\ and \t tab', mountpoint="/m/odd")
    registry.add(odd)
    assert registry.load()["odd"] == odd


def test_duplicate_add_is_refused_and_registry_unchanged(xdg):
    registry.add(_vault())
    before = open(paths.registry_file()).read()
    with pytest.raises(NsshellError, match="already exists"):
        registry.add(_vault())
    assert open(paths.registry_file()).read() == before


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[vaults.taxes\n", "not valid TOML"),
        ('[vaults.taxes]\ncipher_dir = 3\nmountpoint = "/m"\n', "wrong type"),
        ('[vaults.taxes]\ncipher_dir = "/c"\nmountpoint = "/m"\ncolour = "red"\n', "unknown key"),
        ('[vaults.taxes]\ncipher_dir = "/c"\nmountpoint = "/m"\n[vaults.taxes]\n', "not valid TOML"),
        ('[vaults."../x"]\ncipher_dir = "/c"\nmountpoint = "/m"\n', "invalid name"),
        ('[vaults.taxes]\ncipher_dir = "relative"\nmountpoint = "/m"\n', "absolute path"),
        ('[vaults.taxes]\nmountpoint = "/m"\n', "has no cipher_dir"),
        ('[vaults.taxes]\ncipher_dir = "/c"\nmountpoint = "/m"\nlinger = "soon"\n', "linger"),
        ('[vaults.taxes]\ncipher_dir = "/c"\nmountpoint = "/m"\nhistory = "everywhere"\n', "history"),
        ("vaults = 3\n", "table of vaults"),
        ("other = 1\n", "unknown top-level key"),
    ],
)
def test_corrupt_registry_gives_one_clear_line(xdg, text, fragment):
    os.makedirs(paths.config_dir())
    with open(paths.registry_file(), "w") as f:
        f.write(text)
    with pytest.raises(NsshellError) as caught:
        registry.load()
    message = str(caught.value)
    assert fragment in message
    assert paths.registry_file() in message
    assert "\n" not in message


def test_corrupt_registry_is_never_rewritten(xdg):
    os.makedirs(paths.config_dir())
    with open(paths.registry_file(), "w") as f:
        f.write("[vaults.taxes\n")
    with pytest.raises(NsshellError):
        registry.add(_vault("other"))
    assert open(paths.registry_file()).read() == "[vaults.taxes\n"


@pytest.mark.parametrize("value, seconds", [(0, 0), (90, 90), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400)])
def test_durations(value, seconds):
    assert registry.parse_duration(value) == seconds


def test_cli_unknown_vault(xdg, capsys):
    assert main(["status", "nope"]) == errors.NOT_FOUND
    err = capsys.readouterr().err
    assert err.startswith("nsshell: no vault named 'nope'")
    assert err.count("\n") == 1


def test_cli_bad_name_is_usage_error(xdg, capsys):
    assert main(["run", "../x", "--", "true"]) == errors.USAGE
    assert "invalid vault name '../x'" in capsys.readouterr().err


def test_cli_run_without_command(xdg, capsys):
    assert main(["run", "taxes"]) == errors.USAGE
    assert "nothing to run" in capsys.readouterr().err


def test_cli_list_json_empty(xdg, capsys):
    assert main(["list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_cli_help_teaches(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    for word in ("create", "run", "enter", "lock", "examples:", 'eval "$(nsshell init bash)"', "exit codes"):
        assert word in out


def test_cli_missing_gocryptfs(xdg, monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("nsshell.backend.HARDENED_PATH", "/nonexistent/gocryptfs")  # installed by scripts/test
    from nsshell.passphrase import PassphraseSource
    from nsshell import vaults

    with pytest.raises(NsshellError, match="gocryptfs is not installed") as caught:
        vaults.create("taxes", PassphraseSource(passfile="/dev/null"))
    assert caught.value.code == errors.UNSUPPORTED
    assert registry.load() == {}
    assert not os.path.exists(paths.default_cipher_dir("taxes"))


def test_registry_cache_follows_every_edit(xdg):
    registry.add(_vault("taxes"))
    assert registry.load()["taxes"].mountpoint == "/m/taxes"  # parsed, then cached
    assert os.path.exists(os.path.join(paths.cache_dir(), "registry.cache"))
    path = paths.registry_file()
    text = open(path).read()
    # Same size, same second: only the bytes differ.
    with open(path, "w") as f:
        f.write(text.replace("/m/taxes", "/n/taxes"))
    assert registry.load()["taxes"].mountpoint == "/n/taxes"
    with open(path, "w") as f:
        f.write(text.replace('"/m/taxes"', "3"))
    with pytest.raises(NsshellError, match="wrong type"):
        registry.load()


def test_corrupt_registry_cache_is_ignored(xdg):
    registry.add(_vault("taxes"))
    registry.load()
    with open(os.path.join(paths.cache_dir(), "registry.cache"), "wb") as f:
        f.write(b"\x00garbage")
    assert registry.load()["taxes"] == _vault("taxes")


def test_doctor_apparmor_fix_names_the_real_python_and_the_exact_commands(monkeypatch):
    """A pipx user has no sources to read: the fix line itself must do."""
    import sys

    from nsshell import doctor

    monkeypatch.setattr(doctor, "_read", lambda path: "1" if "apparmor" in path else None)
    check = doctor.check_apparmor()
    assert check.status == "fail"
    assert f"profile nsshell {os.path.realpath(sys.executable)} " in check.fix
    assert "sudo apparmor_parser -r /etc/apparmor.d/nsshell" in check.fix
    assert "nsshell sources" not in check.fix


def test_parallel_creates_share_a_parent_directory_without_a_traceback(tmp_path, monkeypatch):
    """Four 'nsshell create' at once (tests/soak) each make ~/Vaults if it is
    missing: the one that loses the race must go on, and own only what it made."""
    from nsshell import vaults

    shared = tmp_path / "Vaults"
    real_mkdir = os.mkdir

    def mkdir_after_another_create(path, mode=0o777):
        if str(path) == str(shared) and not shared.exists():
            real_mkdir(path, 0o700)  # the other create, between our check and our mkdir
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir_after_another_create)
    made = vaults._makedirs(str(shared / "v01"))
    assert made == [str(shared / "v01")]  # ~/Vaults is not ours to remove if this create fails
    assert (shared / "v01").is_dir()

    def mkdir_after_someone_else(path, mode=0o777):
        real_mkdir(path, 0o700)
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir_after_someone_else)
    with pytest.raises(NsshellError) as raised:  # the vault's own directory, made meanwhile by someone else
        vaults._makedirs(str(shared / "v02"))
    assert raised.value.code == errors.CONFLICT and "meanwhile" in str(raised.value)


def test_a_mistyped_vault_name_gets_did_you_mean(xdg):
    registry.add(registry.Vault("taxes", "/c/taxes", "/m/taxes"))
    with pytest.raises(NsshellError) as near:
        registry.get("taxs")
    assert "did you mean 'taxes'?" in near.value.message
    assert near.value.code == errors.NOT_FOUND
    with pytest.raises(NsshellError) as far:
        registry.get("holiday")
    assert "did you mean" not in far.value.message
    assert "nsshell create holiday" in far.value.message


# --- nsshell.lightos: os and os.path for the hot path, without importing os ---------------


@pytest.mark.parametrize("path", ["/a/b", "/a/b/", "a", "/", "//x", "/a//b", "", "a/b", "/a/./b/../c"])
def test_lightos_paths_agree_with_posixpath(path):
    import posixpath

    from nsshell import lightos

    assert lightos.dirname(path) == posixpath.dirname(path)
    assert lightos.basename(path) == posixpath.basename(path)
    assert lightos.isabs(path) == posixpath.isabs(path)
    for rest in (("c",), ("/c",), ("c", ""), ("c", "d")):
        assert lightos.join(path, *rest) == posixpath.join(path, *rest)
    if path.startswith("/") and not path.startswith("//"):
        assert lightos.abspath(path) == posixpath.abspath(path)
    if path:
        from pathlib import PurePosixPath  # path-like objects, as os.path takes them

        assert lightos.join(PurePosixPath(path), "c") == posixpath.join(PurePosixPath(path), "c")
        assert lightos.dirname(PurePosixPath(path)) == posixpath.dirname(PurePosixPath(path))


def test_lightos_execvpe_reports_errors_as_os_does(tmp_path):
    from nsshell import lightos

    with pytest.raises(FileNotFoundError):
        lightos.execvpe("no-such-command-nsshell", ["x"], {"PATH": str(tmp_path)})
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):  # found, but not executable: that error, not "not found"
        lightos.execvpe("not-executable", ["x"], {"PATH": f"/nonexistent:{tmp_path}:/usr/bin"})
    child = os.fork()
    if child == 0:  # the exec itself, with the PATH search and the environment
        try:
            lightos.execvpe("sh", ["sh", "-c", 'test "$NSSHELL_LIGHTOS" = ok'], {"PATH": "/nonexistent:/bin:/usr/bin",
                                                                                  "NSSHELL_LIGHTOS": "ok"})
        finally:
            os._exit(99)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0


def test_lightos_environ_is_the_live_os_environ_once_os_is_loaded(monkeypatch):
    from nsshell import lightos

    monkeypatch.setenv("NSSHELL_LIGHTOS_PROBE", "changed")  # through os.environ, as code off the hot path does
    assert lightos.getenv("NSSHELL_LIGHTOS_PROBE") == "changed"


def test_nsshell_modules_import_each_other_without_a_cycle():
    """Every `import` between nsshell's modules, lazy ones inside functions
    included, as a graph: it has no cycle.  (plan and sessionbus, on the
    holder's side, once imported the client's nsshell.inside, which imports
    nsshell.unlock, which imports the holder.)"""
    import ast
    from pathlib import Path

    package = Path(__file__).resolve().parent.parent / "nsshell"
    modules = {path.stem for path in package.glob("*.py")}
    edges = {}
    for path in package.glob("*.py"):
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "nsshell":
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nsshell."):
                targets.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                targets |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("nsshell.")}
        edges[path.stem] = (targets & modules) - {path.stem}
    assert len(edges) > 20 and edges["entry"] >= {"cli", "inside"}  # the graph was read

    def cycle_from(start, trail):
        for target in sorted(edges[start]):
            if target in trail:
                return trail[trail.index(target):] + [target]
            found = cycle_from(target, trail + [target])
            if found:
                return found
        return None

    for module in sorted(edges):
        cycle = cycle_from(module, [module])
        assert cycle is None, " -> ".join(cycle)
