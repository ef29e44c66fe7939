"""The GUI tests' desktop: Xvfb and a host session bus, real programs
outside and inside a vault (issue 11).  Missing programs skip, except under
NSSHELL_REQUIRE_KERNEL=1 (CI), where scripts/lib.sh installs them and a
missing one fails the test."""

import pytest

from conftest import need_program, require_kernel

from .screen import GUI_PROGRAMS, Desktop



@pytest.fixture
def desktop(world):
    """A created vault 'taxes' in world, and a desktop whose programs use
    world's HOME; world.env gets DISPLAY and the host bus, so that every
    nsshell command of the test runs on this desktop."""
    require_kernel()
    for program in GUI_PROGRAMS:
        need_program(program)
    world.create("taxes")
    # The host bus's socket where programs in a vault can reach it, as a
    # desktop's $XDG_RUNTIME_DIR/bus is (the test's runtime directory lies
    # under /tmp, which a vault's private /tmp covers).
    d = Desktop(str(world.root), world.env, bus_directory=str(world.home / ".hostbus"))
    world.env = d.env
    try:
        yield d
    finally:
        try:
            world.run("lock", "--all", "--force", timeout=120)
        except Exception:
            pass
        d.stop()
