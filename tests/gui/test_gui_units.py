"""The GUI-state part of the vault's context, without a desktop: the
session environment and the plan's dconf steps."""

import os

from nsshell import paths, plan, stateenv


def test_gui_state_environment():
    env = {"HOME": "/home/u", "XDG_DATA_HOME": "/home/u/data"}
    stateenv.gui_state_env(env, "/v/t")
    assert env["XDG_DATA_HOME"] == "/v/t/.nsshell/home/.local/share"
    assert env["XDG_CACHE_HOME"] == "/v/t/.nsshell/home/.cache"
    assert env["XDG_STATE_HOME"] == "/v/t/.nsshell/home/.local/state"
    assert "XDG_CONFIG_HOME" not in env  # settings are read where they are
    assert env["NSSHELL_HOST_XDG_DATA_HOME"] == "/home/u/data"
    assert env["NSSHELL_HOST_XDG_CACHE_HOME"] == "/home/u/.cache"
    # The host's data home stays readable (themes, icons, .desktop files), before the system's.
    assert env["XDG_DATA_DIRS"] == "/home/u/data:/usr/local/share:/usr/share"
    assert "DCONF_PROFILE" not in env  # no profile written (the keeper writes it)
    # A run started from inside keeps the host's values, not the vault's.
    stateenv.gui_state_env(env, "/v/t")
    assert env["NSSHELL_HOST_XDG_DATA_HOME"] == "/home/u/data"
    assert env["XDG_DATA_DIRS"] == "/home/u/data:/usr/local/share:/usr/share"


def test_nsshell_keeps_the_host_directories_inside(monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", "/v/t/.nsshell/home/.local/share")
    monkeypatch.setenv("NSSHELL_HOST_XDG_DATA_HOME", "/home/u/data")
    assert paths.data_dir() == "/home/u/data/nsshell"


def test_dconf_is_shadowed_after_a_read_only_view_of_the_host(tmp_path, monkeypatch):
    spec = {"name": "t", "home": "/home/u", "mountpoint": "/home/u/Vaults/t", "runtime_dir": "/run/user/1/nsshell"}
    steps = plan.build(spec)
    kinds = [(s.kind, s.dest) for s in steps]
    view = ("host view", "/run/user/1/nsshell/t.dconf")
    shadow = ("shadow", "/home/u/.config/dconf")
    assert view in kinds and shadow in kinds and kinds.index(view) < kinds.index(shadow)
    profile = next(s for s in steps if s.kind == "dconf profile")
    assert profile.dest == "/home/u/Vaults/t/.nsshell/dconf-profile" and profile.source == view[1]
    # The profile: the vault's database written, the host's read.
    monkeypatch.setattr(plan, "DCONF_SYSTEM_PROFILE", str(tmp_path / "none"))
    written = tmp_path / "profile"
    plan._dconf_profile(plan.Step("dconf profile", str(written), "/run/user/1/nsshell/t.dconf"))
    assert written.read_text() == "user-db:user\nfile-db:/run/user/1/nsshell/t.dconf/user\n"
    assert os.stat(written).st_mode & 0o777 == 0o600
    system = tmp_path / "system"
    system.write_text("user-db:user\nsystem-db:local\n")
    monkeypatch.setattr(plan, "DCONF_SYSTEM_PROFILE", str(system))
    plan._dconf_profile(plan.Step("dconf profile", str(written), "/view"))
    assert written.read_text() == "user-db:user\nfile-db:/view/user\nsystem-db:local\n"
