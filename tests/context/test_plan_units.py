"""The plan, the registry's context keys and the environment set inside a
vault, without a kernel (the integration tests beside this file run them
for real)."""

import os
import subprocess
import sys

import pytest

from nsshell import plan, registry, stateenv
from nsshell.errors import NsshellError


def _spec(**extra):
    spec = {"name": "t", "mountpoint": "/tmp/w/h/Vaults/t", "home": "/tmp/w/h", "runtime_dir": "/tmp/w/r/nsshell"}
    spec.update(extra)
    return spec


def _kinds(steps):
    return [s.kind for s in steps]


def test_plan_order_follows_the_settings():
    steps = plan.build(_spec(offline=True, hide=["~/.ssh", "/srv/keys"], private=["~/.foo_history"]))
    kinds = _kinds(steps)
    # network first, the tmpfs before the mount (so a mountpoint under /tmp is
    # let through, then mounted over), shadows need the vault, hide comes last.
    assert kinds[:5] == ["offline", "private tmp", "private tmp", "mount vault", "verify"]
    assert set(kinds[5:-2]) == {"shadow", "host view", "dconf profile"} and kinds[-2:] == ["hide", "hide"]
    tmp = steps[1]
    assert tmp.dest == "/tmp" and tmp.source is None
    # HOME holds the mountpoint: only HOME is let through, with the runtime dir.
    assert set(tmp.keep) == {"/tmp/.X11-unix", "/tmp/w/h", "/tmp/w/r/nsshell"}
    assert steps[2].dest == "/var/tmp" and steps[2].keep == ()
    shadows = {s.dest: s.source for s in steps if s.kind == "shadow"}
    assert shadows["/tmp/w/h/.foo_history"] == "/tmp/w/h/Vaults/t/.nsshell/home/.foo_history"
    assert shadows["/tmp/w/h/.cache/thumbnails"].endswith("/.nsshell/home/.cache/thumbnails/")  # a directory
    assert [s.dest for s in steps if s.kind == "hide"] == ["/tmp/w/h/.ssh", "/srv/keys"]


def test_kept_tmp_needs_the_vault_so_comes_after_verify():
    steps = plan.build(_spec(keep_tmp=True, mountpoint="/home/u/Vaults/t", home="/home/u"))
    kinds = _kinds(steps)
    assert kinds == ["mount vault", "verify", "private tmp", "private tmp"] + kinds[4:]
    assert steps[2].source == "/home/u/Vaults/t/.nsshell/tmp" and steps[3].source == "/home/u/Vaults/t/.nsshell/var-tmp"
    assert "private tmp" not in _kinds(plan.build(_spec(private_tmp=False)))
    assert "offline" not in kinds
    # A mountpoint below /tmp: binding it back after the mount would copy the
    # vault's mount, so that directory gets the tmpfs, before the mount.
    steps = plan.build(_spec(keep_tmp=True))
    assert [(s.kind, s.dest, s.source) for s in steps[:4]] == [
        ("private tmp", "/tmp", None), ("mount vault", "/tmp/w/h/Vaults/t", None),
        ("verify", "/tmp/w/h/Vaults/t", None), ("private tmp", "/var/tmp", "/tmp/w/h/Vaults/t/.nsshell/var-tmp"),
    ]


def test_shadows_outside_home_are_dropped():
    steps = plan.build(_spec(private=["/etc/passwd", "~"]))
    assert all(s.dest.startswith("/tmp/w/h/") for s in steps if s.kind == "shadow")


def _write(tmp_path, text):
    path = tmp_path / "vaults.toml"
    path.write_text(text)
    return str(path)


BASE = '[vaults.t]\ncipher_dir = "/c"\nmountpoint = "/m"\n'


def test_registry_context_keys_and_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _write(tmp_path, '[defaults]\nhide = ["~/.ssh"]\nprivate = ["~/.a"]\noffline = true\n\n'
                  + BASE + 'private = ["~/.b"]\noffline = false\nkeep_tmp = true\n')
    vault = registry.get("t", path)
    assert vault.context() == {
        "offline": False, "private_tmp": True, "keep_tmp": True, "private": ["~/.a", "~/.b"], "hide": ["~/.ssh"],
        "dbus": "vault",  # the default (tests/desktop/test_bus_settings.py)
    }
    # Rewriting the registry (create, remove) keeps [defaults] and the vault's own keys.
    other = registry.Vault(name="u", cipher_dir="/c2", mountpoint="/m2")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    registry.add(other, path)
    again = registry.get("t", path)
    assert again.context() == vault.context()
    assert registry.get("u", path).context()["hide"] == ["~/.ssh"]


@pytest.mark.parametrize(
    "text, words",
    [
        ('private = ["/etc/x"]\n', "must start with '~/'"),
        ('private = "~/.x"\n', "private has the wrong type"),
        ('hide = ["rel/x"]\n', "must be absolute"),
        ('hide = ["~/../x"]\n', "not a usable path"),
        ('offline = "yes"\n', "offline has the wrong type"),
    ],
)
def test_registry_bad_context_values_say_which_key(tmp_path, monkeypatch, text, words):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = _write(tmp_path, BASE + text)
    with pytest.raises(NsshellError) as caught:
        registry.load(path)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert path in str(caught.value)


def test_unknown_defaults_key_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(NsshellError, match="unknown key 'linger'"):
        registry.load(_write(tmp_path, "[defaults]\nlinger = 5\n" + BASE))


def test_environment_inside():
    env = {"TMPDIR": "/home/u/tmp", "LESSHISTFILE": "-", "VIMINIT": "source ~/my.vim", "TMUX": "/tmp/tmux-1/default,1,0",
           "PYTHONSTARTUP": "/home/u/.pystartup"}
    stateenv.tool_state_env(env, "/v/t", private_tmp=True)
    assert env["TMPDIR"] == "/tmp"
    assert env["LESSHISTFILE"] == "-"  # switched off by the user: stays off
    assert env["SQLITE_HISTORY"] == "/v/t/.nsshell/home/.sqlite_history"
    assert env["VIMINIT"] == "set viminfofile=/v/t/.nsshell/home/.viminfo | source ~/my.vim"
    assert "TMUX" not in env and env["NSSHELL_OUTER_TMUX"] == "/tmp/tmux-1/default,1,0"
    wrappers = env["PATH"].split(":")[0]  # nsshell's tmux and screen come first
    assert os.access(os.path.join(wrappers, "tmux"), os.X_OK) and os.access(os.path.join(wrappers, "screen"), os.X_OK)
    assert env["NSSHELL_OUTER_PYTHONSTARTUP"] == "/home/u/.pystartup"
    assert env["PYTHONSTARTUP"].endswith("nsshell/python_startup.py") and os.path.exists(env["PYTHONSTARTUP"])
    # A second join (a nested run) keeps the user's own settings, not ours twice.
    stateenv.tool_state_env(env, "/v/t", private_tmp=True)
    assert env["VIMINIT"] == "set viminfofile=/v/t/.nsshell/home/.viminfo | source ~/my.vim"
    assert env["NSSHELL_OUTER_PYTHONSTARTUP"] == "/home/u/.pystartup"
    assert env["PATH"].count(wrappers) == 1
    for tmpdir, expected in (("/tmp", "/tmp"), ("/var/tmp/", "/var/tmp/"), ("/v/t/tmp", "/v/t/tmp"), ("/tmp/x", "/tmp")):
        env = {"TMPDIR": tmpdir}
        stateenv.tool_state_env(env, "/v/t", private_tmp=True)
        assert env["TMPDIR"] == expected, tmpdir
    env = {"TMPDIR": "/home/u/tmp", "TMUX": "x"}
    stateenv.tool_state_env(env, "/v/t", private_tmp=False)
    assert env["TMPDIR"] == "/home/u/tmp" and env["TMUX"] == "x"  # no private /tmp to point at
    assert "PATH" not in env  # and the servers outside are reachable: no wrappers


def test_hot_path_imports_nothing_new():
    """`nsshell run` on an open vault imports inside, client and the light
    modules; never plan, registry, unlock or json."""
    code = (
        "import sys; from nsshell import inside; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('nsshell') or m in ('json', 're', 'stat'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert {"nsshell.plan", "nsshell.registry", "nsshell.unlock", "json", "re"}.isdisjoint(out), out


def test_nothing_covers_the_vault_itself(tmp_path, monkeypatch):
    """A hide or shadow entry that holds the mountpoint (or lies in it) is
    refused with a reason, never carried out: it would cover the vault."""
    calls = []
    monkeypatch.setattr(plan.kernel, "mount_tmpfs", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(plan.kernel, "bind_mount", lambda *a, **k: calls.append(a))
    home = tmp_path / "h"
    (home / "Vaults" / "t").mkdir(parents=True)
    spec = {"name": "t", "mountpoint": str(home / "Vaults" / "t"), "home": str(home), "private_tmp": False,
            "private": ["~/Vaults/"], "hide": ["~/Vaults", "~/Vaults/t/x"]}
    steps = [s for s in plan.build(spec) if s.kind in ("mount vault", "verify", "hide") or s.dest.endswith("Vaults")]
    outcome = plan.Outcome()
    plan.carry_out(steps, outcome, "after mount")
    assert [how for _, _, how in outcome.rows] == ["not done: it holds the vault's mountpoint"] * 3
    assert calls == []


def _placeholder_steps(home, private):
    spec = {"name": "t", "mountpoint": str(home / "Vaults" / "t"), "home": str(home), "private_tmp": False,
            "private": private}
    return [s for s in plan.build(spec) if s.kind != "shadow" or s.dest.startswith(str(home / ".x"))
            or s.dest.endswith((".irb_history", ".lesshst"))]


def test_placeholders_made_for_missing_paths_and_removed_only_while_untouched(tmp_path):
    """make_placeholders makes empty stand-ins (with their missing parents)
    for listed paths the host lacks, except where a variable reaches the
    file; remove_placeholders takes back only what is still as made."""
    home = tmp_path / "h"
    (home / "Vaults" / "t").mkdir(parents=True)
    steps = _placeholder_steps(home, ["~/.x/a/state/", "~/.x/b_history", "~/.x/c_history", "~/.x/d/"])
    made = plan.make_placeholders(steps, "t", str(home))
    paths_made = [p.path for p in made]
    assert str(home / ".irb_history") in paths_made  # no variable reaches it
    assert not (home / ".lesshst").exists()  # LESSHISTFILE does: no placeholder
    assert paths_made.index(str(home / ".x")) < paths_made.index(str(home / ".x" / "a")) < paths_made.index(
        str(home / ".x" / "a" / "state"))  # parents first, each once
    assert (home / ".x" / "a" / "state").is_dir() and (home / ".irb_history").read_bytes() == b""
    assert oct((home / ".irb_history").stat().st_mode & 0o777) == "0o600"
    # Outside, while the vault is open, programs of the user write there:
    (home / ".x" / "b_history").write_text("the user's own\n")  # in place
    replacement = home / ".x" / "c_history.new"
    replacement.write_text("")
    os.replace(replacement, home / ".x" / "c_history")  # replaced by an empty file of theirs
    (home / ".x" / "d" / "theirs").write_text("kept\n")  # a directory filled
    plan.remove_placeholders(made)
    assert not (home / ".irb_history").exists() and not (home / ".x" / "a").exists()
    assert (home / ".x" / "b_history").read_text() == "the user's own\n"
    assert (home / ".x" / "c_history").exists()
    assert (home / ".x" / "d" / "theirs").read_text() == "kept\n"
    assert sorted(os.listdir(home / ".x")) == ["b_history", "c_history", "d"]  # nothing left aside


def test_placeholders_left_by_a_killed_holder_are_taken_back_next_time(tmp_path):
    home = tmp_path / "h"
    (home / "Vaults" / "t").mkdir(parents=True)
    steps = _placeholder_steps(home, ["~/.x/a/state/"])
    first = plan.make_placeholders(steps, "t", str(home))
    try:
        os.getxattr(home / ".irb_history", plan.PLACEHOLDER_XATTR)
    except OSError as exc:
        pytest.skip(f"this file system keeps no user xattrs ({exc.strerror}): only the holder's memory knows")
    assert first  # ... and the holder was killed: nobody removed them
    (home / ".x" / "mine").write_text("")  # the user's, in a directory we made
    again = plan.make_placeholders(steps, "t", str(home))
    assert {p.path for p in again} == {p.path for p in first}  # adopted, not made twice
    assert plan.make_placeholders(steps, "other-vault", str(home)) == []  # not another vault's
    plan.remove_placeholders(again)
    assert not (home / ".irb_history").exists() and not (home / ".x" / "a").exists()
    assert os.listdir(home / ".x") == ["mine"]


def test_covering_again_looks_again_when_the_host_replaces_the_file_meanwhile(tmp_path, monkeypatch):
    """Found by tests/gui: a GTK program outside saved recently-used.xbel
    twice in a row; the keeper's bind met the first new file already gone
    (ENOENT), and the vault locked under the programs inside."""
    import errno

    from nsshell import kernel

    dest = tmp_path / "recently-used.xbel"
    dest.write_text("the host's")
    step = plan.Step("shadow", str(dest), str(tmp_path / "vault-copy"))
    outcome = plan.Outcome()
    outcome.bound.append([step, (0, 0)])  # not what is there now: replaced on the host
    binds = []

    def bind(source, target, readonly=False):
        binds.append(target)
        if len(binds) == 1:
            raise kernel.KernelError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(plan.kernel, "bind_mount", bind)
    assert plan.restore_shadows(outcome) == [str(dest)]
    assert binds == [str(dest), str(dest)]
    info = os.stat(dest)
    assert outcome.bound[0][1] == (info.st_dev, info.st_ino)

    # A path that never stops vanishing under the bind: fail safe (the keeper locks).
    outcome.bound[0][1] = (0, 0)
    monkeypatch.setattr(plan.kernel, "bind_mount", lambda *a, **k: (_ for _ in ()).throw(
        kernel.KernelError(errno.ENOENT, "No such file or directory")))
    with pytest.raises(OSError):
        plan.restore_shadows(outcome)
