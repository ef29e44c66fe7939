"""Bad input, property-based: vault names, registry contents, argument lists.

In-process (nsshell.entry.main) with a private HOME/XDG per example: no
kernel needed.  Every failure is one line starting with 'nsshell', a
non-zero exit, never a traceback; a failed command never changes the
registry or loses a vault.  Nothing here can reach gocryptfs or exec: the
registered vaults' cipher dirs do not exist, so an unlock stops in its
preflight, before any passphrase is read."""

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsshell import entry, passphrase
from nsshell.errors import NsshellError

SETTINGS = settings(max_examples=int(os.environ.get("NSSHELL_HYPOTHESIS_EXAMPLES", "150")), deadline=None, suppress_health_check=list(HealthCheck), database=None)
ERROR_LINE = re.compile(r"^nsshell( [a-z]+)?: [^\n]+\n\Z")


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch):
    """No example may block on a terminal or read the test's stdin."""

    def no_prompt(*args, **kwargs):
        raise NsshellError("no terminal to ask for the passphrase on (test)", 4)

    monkeypatch.setattr(passphrase, "prompt", no_prompt)
    monkeypatch.setattr(passphrase, "prompt_line", no_prompt)
    saved = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    yield
    os.dup2(saved, 0)
    os.close(saved)


class Home:
    def __init__(self, monkeypatch):
        self.root = Path(tempfile.mkdtemp(prefix="nsb", dir="/tmp"))
        self.runtime = self.root / "r"
        self.runtime.mkdir(mode=0o700)
        self.config = self.root / "h" / ".config"
        self.registry = self.config / "nsshell" / "vaults.toml"
        for var, value in {"HOME": self.root / "h", "XDG_RUNTIME_DIR": self.runtime, "XDG_CONFIG_HOME": self.config,
                           "XDG_DATA_HOME": self.root / "h" / "data", "NO_COLOR": "1"}.items():
            monkeypatch.setenv(var, str(value))
        monkeypatch.delenv("NSSHELL_VAULT", raising=False)

    def write_registry(self, text):
        self.registry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.registry.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))

    def snapshot(self):
        try:
            return self.registry.read_bytes()
        except FileNotFoundError:
            return None

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of nsshell.entry.main(argv) (the installed command); SystemExit counts as an exit."""
    try:
        code = entry.main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException as exc:  # a traceback in real life
        out, err = capsys.readouterr()
        pytest.fail(f"nsshell {argv!r} raised {type(exc).__name__}: {exc}\nstderr: {err}")
    out, err = capsys.readouterr()
    return code, out, err


def check_failure(argv, code, err):
    assert code != 0
    assert "Traceback" not in err, (argv, err)
    assert ERROR_LINE.match(err), (argv, err)


def _valid_registry(root):
    return (
        "[vaults.taxes]\n"
        f'cipher_dir = "{root}/missing-cipher-taxes"\n'
        f'mountpoint = "{root}/mnt/taxes"\n'
        "linger = 0\n"
        'history = "vault"\n'
        "\n[vaults.medical]\n"
        f'cipher_dir = "{root}/missing-cipher-medical"\n'
        f'mountpoint = "{root}/mnt/medical"\n'
        'linger = "5m"\n'
    )


# --- vault names ---------------------------------------------------------------------------

names = st.one_of(
    st.text(max_size=80),
    st.text(alphabet="abcXYZ019._-/ \n\t\\'\"$*?~", max_size=70),
    st.sampled_from(["..", ".", "-x", "--help", "a" * 64, "a" * 65, "taxes", "TAXES", "taxes/", "ta\x00xes", "é"]),
)


@SETTINGS
@given(name=names, verb=st.sampled_from(["create", "run", "enter", "open", "lock", "status", "ps", "remove"]))
def test_any_vault_name_fails_cleanly_and_keeps_the_registry(monkeypatch, capsys, name, verb):
    home = Home(monkeypatch)
    try:
        home.write_registry(_valid_registry(home.root))
        before = home.snapshot()
        argv = {
            "create": ["create", name, "--passfile", str(home.root / "no-such-passfile")],
            "run": ["run", name, "--", "true"],
            "enter": ["enter", name],
            "open": ["open", name],
            "lock": ["lock", name],
            "status": ["status", name],
            "ps": ["ps", name],
            "remove": ["remove", name, "--purge"],
        }[verb]
        code, out, err = run_cli(argv, capsys)
        if code == 0:
            # Only these can succeed with no vault open: status of a known vault,
            # and lock of one that is not open.
            # and any verb asked for its help.
            assert (verb in ("status", "lock", "ps") and name in ("taxes", "medical")) or name in ("-h", "--help") or (verb == "status" and name == "--"), (
                argv, out, err)
        else:
            check_failure(argv, code, err)
            assert home.snapshot() == before
    finally:
        home.cleanup()


# --- registry contents ---------------------------------------------------------------------

toml_values = st.one_of(
    st.integers(-10, 10**6), st.booleans(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.just("[1, 2]"), st.just("{a = 1}"), st.just('"relative/path"'), st.just('"/abs/path"'),
    st.just("1979-05-27T07:32:00Z"), st.just('"30s"'), st.just('"5x"'), st.just('"-1"'),
)
keys = st.sampled_from(["cipher_dir", "mountpoint", "linger", "extpass", "history", "unknown", "Cipher_Dir", "name"])
table_names = st.one_of(st.sampled_from(["taxes", "medical", "bad name", "-x", "a.b", '"quoted"', "x" * 70]),
                        st.text(alphabet="abc.-_", min_size=1, max_size=8))


@st.composite
def registries(draw):
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        lines.append(f"[vaults.{draw(table_names)}]")
        for _ in range(draw(st.integers(0, 6))):
            lines.append(f"{draw(keys)} = {draw(toml_values)}")
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(
            ["vaults = 3", "[other]", "x = 1", "[vaults]", "[[vaults]]", "[vaults.taxes", "= 1", "\x00", "[vaults.taxes]"])))
    text = "\n".join(lines) + "\n"
    if draw(st.booleans()):
        text = draw(st.sampled_from([text[: len(text) // 2], text + "\xff", text.replace("\n", "\r")]))
    return text


@SETTINGS
@given(text=st.one_of(registries(), st.binary(max_size=200)),
       argv=st.sampled_from([["list"], ["list", "--json"], ["status"], ["status", "taxes"], ["lock", "--all"],
                             ["run", "taxes", "--", "true"], ["open", "taxes"], ["ps", "taxes"],
                             ["remove", "taxes"], ["create", "fresh", "--passfile", "/nonexistent/p"]]))
def test_any_registry_content_gives_a_clean_error_and_stays_as_it_was(monkeypatch, capsys, text, argv):
    home = Home(monkeypatch)
    try:
        home.write_registry(text)
        before = home.snapshot()
        code, out, err = run_cli(argv, capsys)
        if code != 0:
            check_failure(argv, code, err)
            assert home.snapshot() == before, "a failed command changed the registry"
        elif argv[0] != "remove":
            assert home.snapshot() == before, "a read-only command changed the registry"
    finally:
        home.cleanup()


def test_registry_that_is_a_directory_or_unreadable(monkeypatch, capsys):
    home = Home(monkeypatch)
    try:
        home.registry.mkdir(parents=True)
        code, _, err = run_cli(["list"], capsys)
        check_failure(["list"], code, err)
        home.registry.rmdir()
        home.write_registry(_valid_registry(home.root))
        home.registry.chmod(0)
        if os.access(home.registry, os.R_OK):
            pytest.skip("running as root: mode 0 does not stop reads")
        code, _, err = run_cli(["run", "taxes", "--", "true"], capsys)
        check_failure(["run"], code, err)
    finally:
        home.registry.chmod(0o600) if home.registry.is_file() else None
        home.cleanup()


# --- argument lists ------------------------------------------------------------------------

words = st.sampled_from([
    "run", "enter", "open", "lock", "list", "status", "ps", "remove", "create", "init", "--", "-", "--all",
    "--force", "--json", "--purge", "-y", "--yes", "--quiet", "-q", "--passfile", "--extpass", "--shell",
    "--cipher-dir", "--mountpoint", "--cmd", "--no-prompt", "bash", "zsh", "xonsh", "taxes", "medical",
    "nope", "true", "/bin/sh", "--bogus", "-x", "", " ", "a/b", "\n", "--version=1", "--help=x",
])


@SETTINGS
@given(argv=st.lists(st.one_of(words, st.text(max_size=12)), max_size=7))
def test_any_argument_list_fails_cleanly_and_keeps_the_registry(monkeypatch, capsys, argv):
    if argv and argv[0] in ("doctor",):
        return
    home = Home(monkeypatch)
    try:
        home.write_registry(_valid_registry(home.root))
        before = home.snapshot()
        code, out, err = run_cli(argv, capsys)
        if code == 2 and err == "" and out.startswith("usage: nsshell"):
            assert not any(w in argv for w in ("run", "enter", "open", "lock", "list", "status", "ps", "remove",
                                               "create", "init")) or "--" in argv, argv  # no verb: help
        elif code != 0:
            check_failure(argv, code, err)
            assert home.snapshot() == before
        else:
            assert "Traceback" not in err
            vaults_now = home.snapshot()
            if vaults_now != before:  # only remove may change it, and only by removing a vault
                assert "remove" in argv, argv
    finally:
        home.cleanup()
