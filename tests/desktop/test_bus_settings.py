"""The per-vault setting dbus = "vault" (default) | "host" | "none", in the
registry and its [defaults], shown by status; with a real host session bus
at $XDG_RUNTIME_DIR/bus (private_tmp = false, so that the private /tmp does
not hide it first: a desktop's runtime directory is not under /tmp)."""

import json

import pytest

from nsshell import paths, sessionbus

from .buses import SessionBus, need
from .test_autolock import set_registry

GET_ID = "--dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId"


@pytest.fixture
def host(world):
    need("dbus-send")
    bus = SessionBus(str(world.root), screensaver=False, socket=str(world.runtime / "bus"))
    world.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
    world.create("taxes")
    world.bus = bus
    world.host_id = bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")[0]
    try:
        yield world
    finally:
        try:
            world.lock_all()
        finally:
            bus.stop()


def inside(world, script):
    return world.inside("taxes", script, check=False)


def status(world):
    return json.loads(world.run("status", "taxes", "--json", check=True).stdout)


@pytest.mark.namespaces
@pytest.mark.parametrize("dbus", ["vault", "none", None])
def test_the_hosts_bus_socket_is_hidden_unless_dbus_is_host(host, dbus):
    world = host
    settings = {"private_tmp": "false"}
    if dbus:
        settings["dbus"] = f'"{dbus}"'
    set_registry(world, "taxes", **settings)
    assert status(world)["dbus"] == (dbus or "vault")
    result = inside(world, f'printf "%s\\n" "$DBUS_SESSION_BUS_ADDRESS"; '
                           f'dbus-send --bus="unix:path={world.runtime}/bus" --print-reply {GET_ID}; '
                           f'test -S "{world.runtime}/bus" && echo socket-visible')
    address = result.stdout.splitlines()[0]
    assert address == ("disabled:" if dbus == "none" else f"unix:path={world.runtime}/nsshell/taxes.bus/bus")
    assert world.host_id not in result.stdout and "socket-visible" not in result.stdout
    assert "Failed to connect" in result.stderr or "Connection refused" in result.stderr, result.stderr
    if dbus == "none":
        refused = inside(world, f"dbus-send --session --print-reply {GET_ID}")
        assert refused.returncode != 0
    # Outside, the host's socket is untouched.
    assert world.bus.accepts_connections()


@pytest.mark.namespaces
def test_dbus_host_keeps_the_hosts_bus(host):
    world = host
    set_registry(world, "taxes", private_tmp="false", dbus='"host"')
    world.open("taxes")
    result = inside(world, f'printf "%s\\n" "$DBUS_SESSION_BUS_ADDRESS"; dbus-send --session --print-reply {GET_ID}')
    assert result.stdout.splitlines()[0] == world.bus.address
    assert world.host_id in result.stdout
    assert "taxes.bus" not in world.runtime_files()  # no private bus at all
    row = status(world)
    assert row["dbus"] == "host"
    assert "d-bus:      the host's session bus" in world.run("status", "taxes", check=True).stdout


@pytest.mark.namespaces
def test_defaults_and_the_vaults_own_setting(host):
    world = host
    registry = world.home / ".config" / "nsshell" / "vaults.toml"
    registry.write_text('[defaults]\ndbus = "none"\n\n' + registry.read_text())
    assert status(world)["dbus"] == "none"
    assert "d-bus:      no session bus" in world.run("status", "taxes", check=True).stdout
    set_registry(world, "taxes", dbus='"vault"')
    assert status(world)["dbus"] == "vault"


@pytest.mark.parametrize("value", ['"sometimes"', "true", '["vault"]', '""'])
def test_a_bad_dbus_value_is_one_line_that_says_what_to_use(world, value):
    world.create("taxes")
    set_registry(world, "taxes", dbus=value)
    result = world.run("status", "taxes")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "dbus" in lines[0] and "vaults.toml" in lines[0], result.stderr
    if value in ('"sometimes"', '""'):
        assert "'vault', 'host', 'none'" in lines[0]


def test_bus_addresses_are_paths_escaped_the_d_bus_way():
    assert paths.bus_address("a-b", "/run/user/1000/nsshell") == "unix:path=/run/user/1000/nsshell/a-b.bus/bus"
    assert paths.bus_address("t", "/tmp/x y,z") == "unix:path=/tmp/x%20y%2cz/t.bus/bus"
    environ = {"DBUS_SESSION_BUS_ADDRESS": "unix:path=/tmp/x%20y%2cz/bus;unix:abstract=/tmp/dbus-x,guid=00",
               "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert sessionbus.host_bus_sockets(environ) == ["/tmp/x y,z/bus", "/run/user/1000/bus"]
    assert sessionbus.host_bus_sockets({"DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus-x"}) == []


def test_services_get_the_allowed_environment_only():
    spec = {"name": "t", "runtime_dir": "/run/user/1000/nsshell", "mountpoint": "/home/u/Vaults/t"}
    environ = {"DISPLAY": ":0", "LC_TIME": "C", "HOME": "/home/u", "SSH_AUTH_SOCK": "/run/ssh", "TMPDIR": "/var/x",
               "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1000/bus", "GNUPGHOME": "/g", "XDG_DATA_DIRS": "/usr/share"}
    env = sessionbus.service_environment(environ, spec)
    assert env["DBUS_SESSION_BUS_ADDRESS"] == "unix:path=/run/user/1000/nsshell/t.bus/bus"
    assert {k: env[k] for k in ("DISPLAY", "LC_TIME", "HOME")} == {"DISPLAY": ":0", "LC_TIME": "C", "HOME": "/home/u"}
    # The vault's GUI-state environment, as sessions get it (docs/gui.md).
    assert env["XDG_DATA_HOME"] == "/home/u/Vaults/t/.nsshell/home/.local/share"
    assert env["XDG_DATA_DIRS"] == "/home/u/.local/share:/usr/share"
    assert not {"SSH_AUTH_SOCK", "TMPDIR", "GNUPGHOME"} & set(env)


def test_doctor_says_whether_vaults_get_their_own_bus(tmp_path):
    from nsshell import doctor

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dbus-daemon"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    ok = doctor.check_session_bus({"PATH": str(bin_dir), "DBUS_SESSION_BUS_ADDRESS": "unix:path=/run/user/1/bus"})
    assert ok.status == "ok" and str(fake) in ok.detail
    abstract = doctor.check_session_bus({"PATH": str(bin_dir), "DBUS_SESSION_BUS_ADDRESS": "unix:abstract=/tmp/dbus-x,guid=1"})
    assert abstract.status == "warn" and "offline" in abstract.detail
    missing = doctor.check_session_bus({"PATH": str(tmp_path / "empty")})
    assert missing.status == "warn" and "apt install dbus-daemon" in missing.fix
