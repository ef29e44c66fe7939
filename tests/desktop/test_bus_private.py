"""Each vault's own session bus (issue 11; nsshell.sessionbus): a real
dbus-daemon started inside the vault's namespace, a real bus-activated
service on it (python-dbusmock, started by dbus-daemon from a .service file
in the test's XDG_DATA_HOME), and a real host session bus at
$XDG_RUNTIME_DIR/bus beside it."""

import json
import os
import signal
import subprocess
import time

import pytest

from .buses import DBUSMOCK_PYTHON, SessionBus, log_of, need, need_dbusmock, wait_for

pytestmark = pytest.mark.namespaces

SERVICE = "org.nsshell.TestService"
GET_ID = "--dest=org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus.GetId"


@pytest.fixture
def host(world):
    """A host session bus where desktops put it ($XDG_RUNTIME_DIR/bus), and a
    vault 'taxes' whose bus-activatable service is a dbusmock object."""
    need("dbus-send")
    need_dbusmock()
    bus = SessionBus(str(world.root), screensaver=False, socket=str(world.runtime / "bus"))
    world.env["DBUS_SESSION_BUS_ADDRESS"] = bus.address
    services = world.home / ".local" / "share" / "dbus-1" / "services"
    services.mkdir(parents=True)
    (services / f"{SERVICE}.service").write_text(
        f"[D-BUS Service]\nName={SERVICE}\n"
        f"Exec={DBUSMOCK_PYTHON} -m dbusmock {SERVICE} /org/nsshell/TestService {SERVICE}\n"
    )
    world.create("taxes")
    world.bus = bus
    try:
        yield world
    finally:
        try:
            world.lock_all()
        finally:
            bus.stop()


def bus_id(world, env=None):
    """GetId of the bus DBUS_SESSION_BUS_ADDRESS names inside the vault."""
    result = world.inside("taxes", f"dbus-send --session --print-reply {GET_ID}", check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split('"')[1]


def status(world):
    return json.loads(world.run("status", "taxes", "--json", check=True).stdout)


def start_session(world, script="exec sleep 600"):
    """A long-running session (a real `nsshell run`), once it has joined."""
    before = status(world)["sessions"] if world.state("taxes")["state"] == "open" else 0
    proc = subprocess.Popen(
        [world.exe, "run", "taxes", "--passfile", str(world.passfile), "--", "sh", "-c", script],
        env=world.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: world.state("taxes")["state"] == "open" and status(world)["sessions"] > before, "the session to join", 120)
    return proc


def activate_service(world):
    """Call the test service from inside: the vault's bus starts it."""
    world.inside("taxes", f"dbus-send --session --print-reply --dest={SERVICE} /org/nsshell/TestService "
                          "org.freedesktop.DBus.Introspectable.Introspect")


def service_processes(world):
    """pids of the dbusmock service of this test (anywhere on the machine)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "environ"]):
        cmdline = proc.info["cmdline"] or []
        if SERVICE in cmdline and "dbusmock" in cmdline and proc.status() != psutil.STATUS_ZOMBIE:
            found.append(proc.pid)
    return found


def test_sessions_share_the_vaults_own_bus_at_a_path_inside(host):
    world = host
    host_id = world.bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")[0]
    keeper = start_session(world)
    try:
        address = world.inside("taxes", 'printf %s "$DBUS_SESSION_BUS_ADDRESS"').stdout
        assert address == f"unix:path={world.runtime}/nsshell/taxes.bus/bus"
        first, second = bus_id(world), bus_id(world)
        assert first == second != host_id  # one private bus, shared by the vault's sessions
        # Outside, the path is an empty directory: nothing there to connect to.
        assert os.listdir(world.runtime / "nsshell" / "taxes.bus") == []
        # The bus is a service, not a session: one session (the sleep) only.
        row = status(world)
        assert row["sessions"] == 1 and row["service_pids"], row
        ps = json.loads(world.run("ps", "taxes", "--json", check=True).stdout)
        assert {p["kind"] for p in ps if "dbus-daemon" in p["command"]} == {"service"}
    finally:
        keeper.kill()
        keeper.wait()
    world.wait_until(lambda: world.state("taxes")["state"] == "locked" and not world.holder_pids(), 60, "the vault to lock")
    assert world.runtime_files() == []


def test_services_do_not_keep_the_vault_open(host):
    """linger 0: the last session ends while the bus and a bus-activated
    service run; the vault locks anyway, and they end with it."""
    world = host
    keeper = start_session(world)
    activate_service(world)
    wait_for(lambda: service_processes(world), "the activated service")
    assert status(world)["sessions"] == 1
    keeper.kill()
    keeper.wait()
    world.wait_until(lambda: world.state("taxes")["state"] == "locked" and not world.holder_pids(), 60, "the vault to lock")
    wait_for(lambda: not service_processes(world), "the service to end with the vault")


def test_a_held_vault_stops_its_bus_when_the_last_session_ends(host):
    """No session, no process that can reach the vault: the bus and its
    services stop, and start again for the next session."""
    world = host
    world.open("taxes")
    keeper = start_session(world)
    activate_service(world)
    first = bus_id(world)
    assert service_processes(world)
    keeper.kill()
    keeper.wait()
    wait_for(lambda: not status(world)["service_pids"] and not service_processes(world), "the bus to stop")
    assert status(world)["state"] == "open"
    assert "session bus and its services were stopped" in log_of(world, "taxes")
    assert bus_id(world) != first  # a new bus for the next session


def test_lock_ends_sessions_bus_and_services(host):
    world = host
    session = start_session(world)
    activate_service(world)
    wait_for(lambda: service_processes(world), "the activated service")
    world.run("lock", "taxes", "--force", check=True)
    assert session.wait(30) is not None
    world.wait_until(lambda: not world.holder_pids(), 60, "the holder to exit")
    wait_for(lambda: not service_processes(world), "the service to end")
    assert world.runtime_files() == []


def test_a_killed_bus_is_logged_and_starts_again_at_the_same_address(host):
    world = host
    session = start_session(world)
    try:
        first = bus_id(world)
        import psutil

        daemons = [p for p in status(world)["service_pids"] if psutil.Process(p).name() == "dbus-daemon"]
        assert len(daemons) == 1
        os.kill(daemons[0], signal.SIGKILL)
        wait_for(lambda: "killed by signal 9" in log_of(world, "taxes"), "the keeper to log the bus's death")
        second = bus_id(world)
        assert second != first
        assert world.state("taxes")["state"] == "open"
    finally:
        session.kill()
        session.wait()


NOTIFICATIONS = "org.freedesktop.Notifications"
NOTIFICATIONS_PATH = "/org/freedesktop/Notifications"


def start_notification_service(world):
    """python-dbusmock's notification daemon on the host's bus."""
    env = {**os.environ, "DBUS_SESSION_BUS_ADDRESS": world.bus.address}
    world.bus.start([DBUSMOCK_PYTHON, "-m", "dbusmock", "--template", "notification_daemon"], env=env)
    wait_for(lambda: world.bus.has_name(NOTIFICATIONS), "the mock notification daemon")


def host_notifications(world):
    """(method, args) of every call the host's notification service received."""
    calls = world.bus.call(NOTIFICATIONS, NOTIFICATIONS_PATH, "org.freedesktop.DBus.Mock", "GetCalls")[0]
    return [(method, args) for _, method, args in calls]


def test_notify_send_inside_reaches_the_hosts_notification_service(host):
    """From a locked vault: the unlock, the bus started by notify-send's
    connection, the relay taking the name while notify-send already waits."""
    need("notify-send")
    world = host
    start_notification_service(world)
    world.inside("taxes", "notify-send 'canary summary' 'canary body'")
    notified = [args for method, args in host_notifications(world) if method == "Notify"]
    assert len(notified) == 1 and [value for _, value in notified[0][3:5]] == ["canary summary", "canary body"], notified
    info = world.inside("taxes", f"dbus-send --session --print-reply --dest={NOTIFICATIONS} {NOTIFICATIONS_PATH} "
                                 f"{NOTIFICATIONS}.GetServerInformation").stdout
    assert "mock-notify" in info


def test_notification_signals_come_back_and_nothing_else_passes(host):
    need("notify-send")
    world = host
    start_notification_service(world)
    session = start_session(world)
    try:
        # notify-send --wait returns when the notification is closed: the
        # host's NotificationClosed signal must reach it through the relay.
        waiting = subprocess.Popen([world.exe, "run", "taxes", "--", "notify-send", "--wait", "wait for me"],
                                   env=world.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: any(m == "Notify" for m, _ in host_notifications(world)), "the notification on the host")
        first = 1  # the mock numbers notifications from 1
        world.bus.emit(NOTIFICATIONS, NOTIFICATIONS_PATH, NOTIFICATIONS, "NotificationClosed", "uu", [first, 2])
        assert waiting.wait(60) == 0, waiting.stderr.read()
        # Only the notification interface: the mock's own control interface
        # on the same name is not reachable from inside.
        refused = world.inside("taxes", f"dbus-send --session --print-reply --dest={NOTIFICATIONS} {NOTIFICATIONS_PATH} "
                                        "org.freedesktop.DBus.Mock.GetCalls", check=False)
        assert refused.returncode != 0 and "UnknownMethod" in refused.stderr
    finally:
        session.kill()
        session.wait()


def test_figures_the_bus_costs_a_run_nothing_until_used(host):
    """Figures for docs/reliability.md (run with -s): `nsshell run` of a
    command that does not use the bus, on an open vault with dbus = "vault"
    and "host" (alternating), and the first bus call (the daemon starts) next
    to later ones.  Nothing is asserted about the times (a noisy machine)."""
    from statistics import median

    from .test_autolock import set_registry

    world = host
    world.create("plain")
    set_registry(world, "plain", dbus='"host"')
    world.open("taxes")
    world.open("plain")

    def timed(*argv):
        start = time.monotonic()
        world.run("run", *argv, check=True)
        return (time.monotonic() - start) * 1000

    runs = {"taxes": [], "plain": []}
    for _ in range(15):
        for name in runs:
            runs[name].append(timed(name, "--", "true"))
    assert not status(world)["service_pids"]  # `true` never started the bus
    session = start_session(world)  # keeps the bus, once started, running between the calls
    try:
        call = ["taxes", "--", "dbus-send", "--session", "--print-reply", *GET_ID.split()]
        first = timed(*call)
        later = median(timed(*call) for _ in range(10))
    finally:
        session.kill()
        session.wait()
    print(f"\nFIGURE bus run-true median: dbus=vault {median(runs['taxes']):.1f} ms, dbus=host {median(runs['plain']):.1f} ms")
    print(f"FIGURE bus dbus-send GetId: first (starts the daemon) {first:.1f} ms, later median {later:.1f} ms")


def test_the_vaults_accessibility_bus_is_not_reachable_from_outside(host):
    """GTK programs inside ask the vault's bus for org.a11y.Bus; at-spi puts
    that bus's socket in $XDG_RUNTIME_DIR/at-spi, which the host shares.
    Through it a program outside could read the text of the windows inside
    (what screen readers do).  Inside it is there; outside there is nothing."""
    world = host
    need("/usr/libexec/at-spi-bus-launcher")
    # A runtime directory as a desktop's /run/user/UID: not below /tmp (the
    # vault's private /tmp would hide it anyway), so shared with the host.
    world.runtime = world.home / "run"
    world.runtime.mkdir(mode=0o700)
    world.env["XDG_RUNTIME_DIR"] = str(world.runtime)
    keeper = start_session(world)
    try:
        asked = world.inside("taxes", "dbus-send --session --print-reply=literal --dest=org.a11y.Bus /org/a11y/bus "
                                      "org.a11y.Bus.GetAddress", check=False)
        assert asked.returncode == 0, asked.stderr
        address = asked.stdout.strip()
        path = next(option.split("=", 1)[1] for option in address.split(":", 1)[1].split(",")
                    if option.startswith("path="))
        assert path.startswith(str(world.runtime / "at-spi") + "/"), address
        assert world.inside("taxes", f'test -S "{path}"', check=False).returncode == 0  # inside: the socket
        assert not os.path.exists(path)  # outside: nothing to connect to
        assert os.listdir(world.runtime / "at-spi") == []
    finally:
        keeper.kill()
        keeper.wait()
    world.wait_until(lambda: world.state("taxes")["state"] == "locked" and not world.holder_pids(), 60, "the vault to lock")
