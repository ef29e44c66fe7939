"""The login keyring: a real gnome-keyring-daemon on a private session bus,
unlocked with a test password.  `keyring add` checks and stores, `run` and
`enter` then open without a prompt, a locked or absent keyring falls back to
the prompt with one line saying why, and `passwd` updates the entry."""

import subprocess
import sys

import pexpect
import pytest

from conftest import PASSPHRASE

from .buses import SessionBus

pytestmark = pytest.mark.namespaces


@pytest.fixture
def keyring_world(world):
    bus = SessionBus(str(world.root), screensaver=False)
    try:
        bus.start_keyring(world)
        world.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
        world.env["DBUS_SYSTEM_BUS_ADDRESS"] = f"unix:path={world.root}/no-system-bus"
        world.bus = bus
        yield world
    finally:
        try:
            world.lock_all()
        finally:
            bus.stop()


def stored(world, name="taxes"):
    """What the keyring holds for the vault, read with secretstorage as any client would."""
    script = (
        "import secretstorage, sys\n"
        "c = secretstorage.dbus_init()\n"
        f"items = list(secretstorage.search_items(c, {{'application': 'nsshell', 'vault': {name!r}}}))\n"
        "sys.stdout.write(items[0].get_secret().decode() if items else '<none>')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=world.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def set_keyring_locked(world, locked):
    script = (
        "import secretstorage\n"
        "c = secretstorage.dbus_init()\n"
        "col = secretstorage.get_default_collection(c)\n"
        + ("col.lock()\n" if locked else "col.unlock()\n")
    )
    subprocess.run([sys.executable, "-c", script], env=world.env, check=True, timeout=60)


def registry_text(world):
    return (world.home / ".config" / "nsshell" / "vaults.toml").read_text()


def test_keyring_add_then_open_without_a_prompt(keyring_world):
    world = keyring_world
    world.create("taxes")
    result = world.run("keyring", "add", "taxes", "--passfile", world.passfile)
    assert result.returncode == 0, result.stderr
    assert stored(world) == PASSPHRASE
    assert "keyring = true" in registry_text(world)
    # No passfile and no terminal: only the keyring can have opened it.
    ran = world.run("run", "taxes", "--", "sh", "-c", 'echo in:$NSSHELL_VAULT', input="")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "in:taxes\n"
    assert ran.stderr == ""


def test_keyring_add_refuses_a_wrong_passphrase(keyring_world):
    world = keyring_world
    world.create("taxes")
    wrong = world.root / "wrong"
    wrong.write_text("not it\n")
    result = world.run("keyring", "add", "taxes", "--passfile", wrong)
    assert result.returncode == 4, result.stderr
    assert "wrong passphrase" in result.stderr
    assert stored(world) == "<none>"
    assert "keyring" not in registry_text(world).split("\n[vaults")[1]


def test_locked_keyring_falls_back_to_the_prompt_saying_why(keyring_world):
    world = keyring_world
    world.create("taxes")
    world.run("keyring", "add", "taxes", "--passfile", world.passfile, check=True)
    set_keyring_locked(world, True)
    child = pexpect.spawn(world.exe, ["run", "taxes", "--", "sh", "-c", "echo opened-$((40+2))"], env=world.env,
                          cwd=str(world.home), encoding="utf-8", timeout=120)
    try:
        child.expect("the keyring is locked")
        child.expect("asking for the passphrase instead")
        child.expect("Passphrase for taxes: ")
        child.sendline(PASSPHRASE)
        child.expect("opened-42")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_no_keyring_service_falls_back_to_the_prompt(keyring_world):
    world = keyring_world
    world.create("taxes")
    world.run("keyring", "add", "taxes", "--passfile", world.passfile, check=True)
    env = {**world.env, "DBUS_SESSION_BUS_ADDRESS": f"unix:path={world.root}/no-session-bus"}
    result = world.run("run", "taxes", "--", "true", env=env)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.splitlines()
    assert "no Secret Service keyring is reachable" in lines[0] and "asking for the passphrase instead" in lines[0], lines
    assert "no terminal to ask for the passphrase" in result.stderr


def test_keyring_remove(keyring_world):
    world = keyring_world
    world.create("taxes")
    world.run("keyring", "add", "taxes", "--passfile", world.passfile, check=True)
    result = world.run("keyring", "remove", "taxes")
    assert result.returncode == 0, result.stderr
    assert stored(world) == "<none>"
    assert "keyring = true" not in registry_text(world)
    again = world.run("keyring", "remove", "taxes")
    assert again.returncode == 0 and "held no passphrase" in again.stderr


def test_passwd_updates_the_keyring_entry(keyring_world):
    world = keyring_world
    world.create("taxes")
    world.run("keyring", "add", "taxes", "--passfile", world.passfile, check=True)
    new = world.root / "new"
    new.write_text("a brand new passphrase\n")
    result = world.run("passwd", "taxes", "--passfile", world.passfile, "--new-passfile", new)
    assert result.returncode == 0, result.stderr
    assert "updated the passphrase in the keyring" in result.stderr
    assert stored(world) == "a brand new passphrase"
    assert world.run("run", "taxes", "--", "true", input="").returncode == 0


def test_run_on_an_open_vault_imports_no_keyring_code(keyring_world):
    """The bench goal: the hot path stays as light as before, even for a vault
    whose passphrase is in the keyring."""
    world = keyring_world
    world.create("taxes")
    world.run("keyring", "add", "taxes", "--passfile", world.passfile, check=True)
    world.run("open", "taxes", check=True)
    result = world.run("run", "taxes", "--", "true", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported, result.stderr
    for heavy in ("secretstorage", "jeepney", "cryptography", "nsshell.keyring", "nsshell.autolock"):
        assert heavy not in imported, sorted(imported)
