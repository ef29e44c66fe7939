"""`nsshell passwd` and `nsshell add` with real gocryptfs, and `remove`
leaving nothing but the ciphertext and a line that says how to adopt it."""

import os
import stat
import subprocess

import pytest

pytestmark = pytest.mark.namespaces

NEW = "a brand new passphrase"


def passfile(world, name, text):
    path = world.root / name
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def conf(world, name="taxes"):
    return (world.cipher_dir(name) / "gocryptfs.conf").read_bytes()


def test_passwd_on_a_locked_vault(vault):
    world = vault
    world.inside("taxes", 'echo kept > "$NSSHELL_MOUNTPOINT/file"')
    new = passfile(world, "new", NEW)
    result = world.run("passwd", "taxes", "--passfile", world.passfile, "--new-passfile", new)
    assert result.returncode == 0, result.stderr
    assert "changed the passphrase" in result.stderr and "is open" not in result.stderr
    old_try = world.run("run", "taxes", "--passfile", world.passfile, "--", "true")
    assert old_try.returncode == 4 and "wrong passphrase" in old_try.stderr
    new_try = world.run("run", "taxes", "--passfile", new, "--", "cat", str(world.mountpoint("taxes") / "file"))
    assert new_try.returncode == 0 and new_try.stdout == "kept\n", new_try.stderr


def test_passwd_with_a_wrong_current_passphrase_changes_nothing(vault):
    world = vault
    before = conf(world)
    wrong = passfile(world, "wrong", "not it")
    new = passfile(world, "new", NEW)
    result = world.run("passwd", "taxes", "--passfile", wrong, "--new-passfile", new)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == "nsshell: wrong current passphrase; nothing was changed"
    assert conf(world) == before


def test_passwd_on_an_open_vault_leaves_its_sessions_alone(vault):
    world = vault
    world.open("taxes")
    new = passfile(world, "new", NEW)
    result = world.run("passwd", "taxes", "--passfile", world.passfile, "--new-passfile", new)
    assert result.returncode == 0, result.stderr
    assert "is open: its sessions go on undisturbed; the new passphrase is needed from its next unlock" in result.stderr
    assert world.inside("taxes", "echo still").stdout == "still\n"
    world.lock_all()
    assert world.run("run", "taxes", "--passfile", new, "--", "true").returncode == 0


def test_passphrases_reach_gocryptfs_on_a_socket_never_in_argv(world, tmp_path):
    """A stand-in gocryptfs records its argv and what its stdin is: a socket
    (which other processes cannot open through /proc, unlike a pipe)."""
    record = world.root / "record"
    fake_dir = world.root / "bin"
    fake_dir.mkdir()
    fake = fake_dir / "gocryptfs"
    fake.write_text(
        "#!/bin/sh\n"
        f'{{ readlink /proc/$$/fd/0; printf "%s\\n" "$@"; cat; }} > "{record}"\n'
        "exit 0\n"
    )
    fake.chmod(stat.S_IRWXU)
    cipher = world.root / "cipher"
    cipher.mkdir()
    (cipher / "gocryptfs.conf").write_text("{}")
    # NSSHELL_GOCRYPTFS too: a hardened copy, where installed, wins over PATH.
    env = {**world.env, "PATH": f"{fake_dir}:{world.env['PATH']}", "NSSHELL_GOCRYPTFS": str(fake)}
    script = (
        "from nsshell import passwd\n"
        f"passwd.change({str(cipher)!r}, b'old secret', b'new secret')\n"
    )
    import sys

    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    lines = record.read_text().splitlines()
    assert lines[0].startswith("socket:["), lines
    assert "old secret" not in lines[1:-2] and "new secret" not in lines[1:-2]
    assert lines[1:5] == ["-passwd", "-q", "--", str(cipher)], lines
    assert lines[-2:] == ["old secret", "new secret"]


def test_remove_then_add_adopts_the_ciphertext_again(vault):
    world = vault
    world.inside("taxes", 'echo kept > "$NSSHELL_MOUNTPOINT/file"')
    cipher = world.cipher_dir("taxes")
    removed = world.run("remove", "taxes")
    assert removed.returncode == 0, removed.stderr
    assert f"to use it again: nsshell add taxes --cipher-dir {cipher}" in removed.stderr
    assert not world.mountpoint("taxes").exists()  # no empty mountpoint left behind
    assert (cipher / "gocryptfs.conf").exists()
    before = conf(world)
    added = world.run("add", "taxes", "--cipher-dir", cipher, "--passfile", world.passfile)
    assert added.returncode == 0, added.stderr
    assert "added vault 'taxes'" in added.stdout
    assert conf(world) == before  # adopting changes nothing in the cipher dir
    assert world.inside("taxes", 'cat "$NSSHELL_MOUNTPOINT/file"').stdout == "kept\n"


def test_add_with_a_wrong_passphrase_adds_nothing(vault):
    world = vault
    cipher = world.cipher_dir("taxes")
    world.run("remove", "taxes", check=True)
    registry_before = (world.home / ".config" / "nsshell" / "vaults.toml").read_text()
    wrong = passfile(world, "wrong", "not it")
    mountpoint = world.root / "elsewhere"
    result = world.run("add", "books", "--cipher-dir", cipher, "--mountpoint", mountpoint, "--passfile", wrong)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == f"nsshell: wrong passphrase for {cipher}"
    assert (world.home / ".config" / "nsshell" / "vaults.toml").read_text() == registry_before
    assert not mountpoint.exists()


def test_add_refuses_a_directory_that_is_not_gocryptfs(world):
    plain = world.root / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    result = world.run("add", "notes", "--cipher-dir", plain, "--passfile", world.passfile)
    assert result.returncode == 2, result.stderr
    assert "has no gocryptfs.conf, so it is not a gocryptfs directory" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = world.run("add", "notes", "--cipher-dir", world.root / "nowhere", "--passfile", world.passfile)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_add_refuses_a_cipher_dir_another_vault_uses(vault):
    world = vault
    result = world.run("add", "twin", "--cipher-dir", world.cipher_dir("taxes"), "--passfile", world.passfile)
    assert result.returncode == 7, result.stderr
    assert "already belongs to vault 'taxes'" in result.stderr
    assert os.path.exists(world.cipher_dir("taxes") / "gocryptfs.conf")
