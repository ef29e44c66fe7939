"""Listed paths the host does not have are shadowed too (issue 9): the
holder makes an empty placeholder on the host to bind over, and takes it
back at lock if it is still untouched."""

import os
import re
import secrets

import pytest

from .scan import scan

pytestmark = pytest.mark.namespaces


def _registry_append(world, text):
    registry = world.home / ".config" / "nsshell" / "vaults.toml"
    registry.write_text(registry.read_text() + text)


def test_state_the_host_lacked_stays_in_the_vault_and_comes_back(vault):
    world = vault
    token = secrets.token_hex(4)
    irb, direnv, own = (f"cnry{token}{what}" for what in ("irb", "direnv", "own"))
    _registry_append(world, 'private = ["~/.mytool/state/"]\n')  # a user's entry, its parent missing too
    for path in (".irb_history", ".local/share/direnv", ".mytool"):
        assert not (world.home / path).exists()
    world.open("taxes")
    # irb appends to ~/.irb_history in place; direnv fills its directory.
    world.inside("taxes", f"echo {irb} >> ~/.irb_history; mkdir -p ~/.local/share/direnv/allow ~/.mytool/state; "
                 f"echo {direnv} > ~/.local/share/direnv/allow/x; echo {own} > ~/.mytool/state/f")
    # Outside, while open: only empty placeholders; status says so.
    assert (world.home / ".irb_history").read_bytes() == b""
    assert os.listdir(world.home / ".local/share/direnv") == [] and os.listdir(world.home / ".mytool/state") == []
    status = world.run("status", "taxes", check=True).stdout
    # The list may wrap: its continuation lines are indented further than the next entry's.
    placeholders = re.split(r"\n  (?! )", status.split("  placeholders on the host", 1)[1])[0]
    assert "~/.irb_history" in placeholders and "~/.mytool/state" in placeholders, status
    assert "~/.lesshst" not in placeholders, status  # LESSHISTFILE reaches it: no placeholder
    assert "not on host" not in status, status
    world.run("lock", "taxes", check=True)
    # After the lock: the host is exactly as it was, and nothing of it is anywhere outside the ciphertext.
    for path in (".irb_history", ".local/share/direnv", ".mytool"):
        assert not (world.home / path).exists(), path
    assert scan([world.home, "/tmp", "/var/tmp"], [irb, direnv, own], skip=[world.cipher_dir("taxes")]) == []
    # The next unlock reads it back inside.
    out = world.inside("taxes", "cat ~/.irb_history ~/.local/share/direnv/allow/x ~/.mytool/state/f").stdout
    assert out.split() == [irb, direnv, own], out
    world.run("lock", "taxes", check=True)
    assert not (world.home / ".irb_history").exists()


def test_what_the_user_writes_to_a_placeholder_outside_is_kept(vault):
    world = vault
    world.open("taxes")
    irb, hsts = world.home / ".irb_history", world.home / ".wget-hsts"
    assert irb.read_bytes() == b"" and hsts.read_bytes() == b""  # the placeholders
    with open(irb, "a") as f:  # irb outside, in place
        f.write("puts 1\n")
    new = world.home / ".wget-hsts.tmp"
    new.write_text("example.org\t0\t1\n")
    os.replace(new, hsts)  # write-then-rename outside: a file of the user's now
    (world.home / ".local/share/direnv").joinpath("outside").write_text("x\n")  # a directory the user filled
    # The rename outside made the kernel detach the shadow inside; the keeper binds it again.
    world.wait_until(lambda: world.inside("taxes", "cat ~/.irb_history ~/.wget-hsts | wc -c").stdout.strip() == "0",
                     timeout=60, what="inside to see the vault's copies again")
    world.inside("taxes", "echo inside-only >> ~/.wget-hsts")
    assert hsts.read_text() == "example.org\t0\t1\n"
    world.run("lock", "taxes", check=True)
    assert irb.read_text() == "puts 1\n"
    assert hsts.read_text() == "example.org\t0\t1\n"
    assert (world.home / ".local/share/direnv/outside").read_text() == "x\n"
    assert not [n for n in os.listdir(world.home) if ".nsshell-" in n]


def test_write_then_rename_over_a_shadowed_file(vault):
    """vim writes its viminfo through a temp file and a rename; over a bind
    mount that rename fails (EBUSY).  vim is pointed at the vault's copy by
    VIMINIT, so it never renames over the mount.  A program with no variable
    that renames over a shadowed file gets EBUSY, and the host file stays."""
    world = vault
    (world.home / ".viminfo").write_text("# outer viminfo\n")
    (world.home / ".irb_history").write_text("outer irb\n")
    before = os.stat(world.home / ".viminfo")
    token = secrets.token_hex(4)
    canary = f"cnry{token}vim"
    mountpoint = world.mountpoint("taxes")
    world.open("taxes")
    world.inside("taxes", f'printf "a\\n{canary}\\n" > "$NSSHELL_MOUNTPOINT/notes"')
    # Real vim, on a pty (script(1)): a search, then write and quit.
    vim = world.inside(
        "taxes",
        "script -qec 'vim -N \"$NSSHELL_MOUNTPOINT/notes\" -c \"silent! /" + canary + "\" -c wq' /dev/null "
        "</dev/null >/dev/null 2>&1; echo vim=$?; grep -c " + canary + " \"$NSSHELL_MOUNTPOINT/.nsshell/home/.viminfo\"",
        check=False,
    )
    assert "vim=0" in vim.stdout and vim.stdout.split()[-1] != "0", vim
    replace = world.inside(
        "taxes",
        "python3 -c \"import os; open(os.path.expanduser('~/.irb_history.new'), 'w').write('inside'); "
        "os.replace(os.path.expanduser('~/.irb_history.new'), os.path.expanduser('~/.irb_history'))\" 2>&1; "
        "rm -f ~/.irb_history.new",
        check=False,
    )
    assert "Device or resource busy" in replace.stdout, replace
    world.run("lock", "taxes", check=True)
    assert (world.home / ".viminfo").read_text() == "# outer viminfo\n"
    assert os.stat(world.home / ".viminfo").st_mtime_ns == before.st_mtime_ns
    assert (world.home / ".irb_history").read_text() == "outer irb\n"
    assert scan([world.home], [canary], skip=[world.cipher_dir("taxes")]) == []
    assert not (mountpoint / "notes").exists()


def test_a_symlink_planted_at_the_vaults_copy_is_replaced_not_followed(vault):
    """Something inside the vault replaces the vault's copies of ~/.wget-hsts
    (a file) and ~/.local/share/nano/ (a directory) with symbolic links to
    host paths.  Bound at the next unlock, they would be followed: the
    tool's state would go to the host, or (a file link, refused with ELOOP)
    the vault could never be opened again.  The keeper replaces each link
    with an empty copy, binds that, and status says so."""
    world = vault
    home = world.home
    (home / ".wget-hsts").write_text("host hsts\n")
    (home / ".local/share/nano").mkdir(parents=True)
    outside_file, outside_dir = home / "outside-file", home / "outside-dir"
    outside_file.write_text("outside\n")
    outside_dir.mkdir()
    world.open("taxes")
    shadow_home = world.mountpoint("taxes") / ".nsshell" / "home"
    world.inside("taxes", f"rm -rf {shadow_home}/.wget-hsts {shadow_home}/.local/share/nano && "
                 f"ln -s {outside_file} {shadow_home}/.wget-hsts && ln -s {outside_dir} {shadow_home}/.local/share/nano")
    world.run("lock", "taxes", "--force", check=True)
    world.open("taxes")  # the unlock that binds the shadows again; held open for status below
    token = secrets.token_hex(4)
    world.inside("taxes", f"echo wget{token} >> ~/.wget-hsts; echo nano{token} > ~/.local/share/nano/search_history")
    # Nothing reached the host through the links or past the shadows.
    assert outside_file.read_text() == "outside\n" and os.listdir(outside_dir) == []
    assert (home / ".wget-hsts").read_text() == "host hsts\n" and os.listdir(home / ".local/share/nano") == []
    # Inside, the vault's own (new) copies hold what was written.
    seen = world.inside("taxes", "cat ~/.wget-hsts ~/.local/share/nano/search_history").stdout
    assert seen == f"wget{token}\nnano{token}\n"
    status = world.run("status", "taxes", check=True).stdout
    assert f"symbolic link to {outside_file}" in status and f"symbolic link to {outside_dir}" in status, status
    assert scan([world.home, "/tmp", "/var/tmp"], [f"wget{token}", f"nano{token}"], skip=[world.cipher_dir("taxes")]) == []
