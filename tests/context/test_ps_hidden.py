"""`nsshell run --hide` gives its command a mount namespace of its own;
what it leaves running still sees the vault, so `ps` must show it and the
vault must stay open for it (issue 9)."""

import pytest

pytestmark = pytest.mark.namespaces


def test_ps_shows_what_a_hidden_run_left_behind(vault):
    world = vault
    (world.home / ".aws").mkdir()
    # The run's shell ends at once; its background sleep stays, in the run's own mount namespace.
    started = world.run(
        "run", "taxes", "--passfile", world.passfile, "--hide", "~/.aws", "--",
        "sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!", check=True,
    )
    pid = int(started.stdout.strip())
    try:
        ps = world.run("ps", "taxes", check=True)
        assert any(line.split()[:3] == [str(pid), "session", "sleep"] for line in ps.stdout.splitlines()), ps
        assert world.state("taxes")["state"] == "open"
    finally:
        world.run("lock", "taxes", "--force", timeout=60)
