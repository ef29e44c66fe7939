"""Unit tests of the desktop pieces that need no daemon: registry fields,
the idle clock, the activity probe on real /proc files, lock reasons."""

import os
import subprocess
import sys

import pytest

from nsshell import autolock, lockreason, registry
from nsshell.errors import NsshellError


def write(tmp_path, body):
    path = tmp_path / "vaults.toml"
    path.write_text(f'[vaults.v]\ncipher_dir = "/c/v"\nmountpoint = "/m/v"\n{body}')
    return str(path)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_registry_defaults_lock_on_everything_and_no_idle_lock(tmp_path):
    vault = registry.load(write(tmp_path, ""))["v"]
    assert vault.lock_on == ("suspend", "screen-lock", "logout")
    assert vault.idle_lock == 0 and vault.keyring is False
    assert "lock_on" not in vault.to_toml() and "idle_lock" not in vault.to_toml()


def test_registry_reads_and_writes_the_desktop_fields(tmp_path):
    vault = registry.load(write(tmp_path, 'lock_on = []\nidle_lock = "30m"\nkeyring = true\n'))["v"]
    assert vault.lock_on == () and vault.idle_lock == 1800 and vault.keyring is True
    path = tmp_path / "again.toml"
    path.write_text(vault.to_toml())
    again = registry.load(str(path))["v"]
    assert again == vault


def test_registry_cache_keeps_the_desktop_fields(tmp_path):
    """The parsed-registry cache is used only if it renders back to the file;
    it must for a vault with every desktop field set."""
    vault = registry.Vault("v", "/c/v", "/m/v", lock_on=("logout",), idle_lock=90, keyring=True)
    path = tmp_path / "vaults.toml"
    path.write_text(registry._render({"v": vault}))
    assert registry.load(str(path))["v"] == vault  # parsed, then cached
    cached = registry._cached(str(path), path.read_bytes())
    assert cached is not None and cached["v"] == vault


@pytest.mark.parametrize(
    "body, words",
    [
        ('lock_on = ["sleep"]\n', "lock_on may hold only"),
        ('lock_on = "suspend"\n', "lock_on has the wrong type"),
        ('idle_lock = "soon"\n', "idle_lock: 'soon' is not a duration"),
        ("keyring = 1\n", "keyring has the wrong type"),
    ],
)
def test_registry_names_a_bad_desktop_field(tmp_path, body, words):
    with pytest.raises(NsshellError) as caught:
        registry.load(write(tmp_path, body))
    assert words in caught.value.message


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class FakeProbe:
    source = "io"

    def __init__(self, readings):
        self.readings = list(readings)

    def read(self):
        return self.readings.pop(0) if self.readings else self.last

    def moved(self, before, now):
        return before != now

    @property
    def last(self):
        return 7


class FakeLocker:
    def __init__(self):
        self.words = []

    def lock(self, word):
        self.words.append(word)


def test_idle_clock_restarts_at_every_change(capsys):
    clock, locker = FakeClock(), FakeLocker()
    # moves at 10, 20, 30 s (interval = 10 s for 100 s), then stays at 7
    probe = FakeProbe([1, 2, 3, 4] + [7] * 20)
    autolock.watch_idle(locker, 100, probe, clock=clock, sleep=clock.sleep)
    assert locker.words == ["idle"]
    assert clock.now == 140.0  # last change seen at 40 s, then 100 s quiet


def test_idle_watch_ends_quietly_when_the_backend_is_gone():
    clock, locker = FakeClock(), FakeLocker()
    probe = FakeProbe([1, None])
    autolock.watch_idle(locker, 30, probe, clock=clock, sleep=clock.sleep)
    assert locker.words == []


def test_cpu_time_counts_as_use_only_from_two_ticks_on():
    """Garbage collection adds a tick now and then to an idle gocryptfs."""
    probe = autolock.ActivityProbe(None)
    probe.source = "cpu"
    assert not probe.moved(29, 30)
    assert probe.moved(29, 31)
    io = autolock.ActivityProbe(None)
    assert io.moved(10659, 11523) and not io.moved(10659, 10659)


def test_activity_probe_counts_io_of_a_readable_process():
    child = subprocess.Popen([sys.executable, "-c", "import sys; [sys.stdout.write(l) for l in sys.stdin]"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        probe = autolock.ActivityProbe(child.pid)
        first = probe.read()
        child.stdin.write("x" * 100000 + "\n")
        child.stdin.flush()
        import time

        deadline = time.monotonic() + 30
        while probe.read() == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert probe.read() != first and probe.source == "io"
    finally:
        child.stdin.close()
        child.wait()


def test_activity_probe_falls_back_to_cpu_time_where_io_is_unreadable():
    """/proc/1/io belongs to root (init): unreadable for a normal user, like a
    non-dumpable gocryptfs.  /proc/1/stat is readable by anyone."""
    if os.geteuid() == 0:
        pytest.skip("root can read every /proc/PID/io; the suite runs as a normal user (scripts/test)")
    probe = autolock.ActivityProbe(1)
    value = probe.read()
    assert probe.source == "cpu" and isinstance(value, int)


def test_activity_probe_counts_only_the_sigio_bytes_of_the_wakeup_pipe():
    """The supervisor's wakeup fd carries every Python-handled signal's number;
    only SIGIO (a FUSE request) is use.  A gone backend ends the watch."""
    import signal

    readable, writable = os.pipe2(os.O_NONBLOCK)
    try:
        probe = autolock.ActivityProbe(os.getpid(), readable)
        assert probe.source == "fuse-requests" and probe.read() == 0
        os.write(writable, bytes([signal.SIGUSR1, signal.SIGCHLD]))
        assert probe.read() == 0 and not probe.moved(0, probe.read())
        os.write(writable, bytes([signal.SIGIO, signal.SIGIO, signal.SIGUSR1]))
        assert probe.read() == 2 and probe.moved(0, 2)
        assert probe.read() == 2
        gone = autolock.ActivityProbe(_a_dead_pid(), readable)
        assert gone.read() is None
    finally:
        os.close(readable)
        os.close(writable)


def _a_dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_lock_reason_is_taken_once(tmp_path):
    lockreason.record("v", str(tmp_path), "screen-lock")
    assert oct((tmp_path / "v.reason").stat().st_mode & 0o777) == "0o600"
    when, word, detail = lockreason.take("v", str(tmp_path))
    assert word == "screen-lock" and detail == "" and lockreason.describe(word) == "the screen was locked"
    assert lockreason.take("v", str(tmp_path)) is None
    # The keeper's own verdict carries what it found, on one line.
    lockreason.record("v", str(tmp_path), lockreason.DISPLACED, "/h/Vaults/v was moved\non the host")
    when, word, detail = lockreason.take("v", str(tmp_path))
    assert (word, detail) == ("displaced", "/h/Vaults/v was moved on the host")
    assert "stopped leading to the vault (/h/Vaults/v was moved on the host)" in lockreason.describe(word, 0, detail)
    # What it records names nothing inside the vault: NAME.reason is on the host.
    found = "something is mounted inside the vault at /h/Vaults/v/clients/acme corp/2025"
    assert lockreason.without_names_inside(found, "/h/Vaults/v") == "something is mounted inside the vault at /h/Vaults/v/..."
    assert lockreason.without_names_inside("/h/Vaults/v was moved", "/h/Vaults/v") == "/h/Vaults/v was moved"
    assert lockreason.without_names_inside("/h/Vaults/vx/a moved", "/h/Vaults/v") == "/h/Vaults/vx/a moved"
    assert lockreason.describe("idle", 1800) == "nothing used it for 30m"


def test_a_lock_request_with_an_unknown_reason_carries_none():
    from nsshell.holder import _lock_reason

    assert _lock_reason(["force", "reason=suspend"]) == "suspend"
    assert _lock_reason(["force", "reason=../../etc"]) is None
    assert _lock_reason(["force"]) is None
