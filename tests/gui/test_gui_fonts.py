"""The user's own fonts stay usable inside a vault (issue 11: "the host's
theme and fonts").  Sessions' XDG_DATA_HOME lies in the vault; fontconfig
finds ~/.local/share/fonts through XDG_DATA_DIRS, where
nsshell.stateenv.gui_state_env puts the host's data home first.  Real
fontconfig, real vault; without that entry fc-list does not list the font."""

import secrets
import shutil

import pytest
from conftest import need_program

pytestmark = pytest.mark.namespaces

SYSTEM_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # fonts-dejavu-core, which the GUI programs pull in


def test_the_users_own_fonts_are_found_inside(vault):
    need_program("fc-list")
    need_program(SYSTEM_FONT)
    fonts = vault.home / ".local" / "share" / "fonts"
    fonts.mkdir(parents=True)
    font = fonts / f"nsshell{secrets.token_hex(4)}.ttf"
    shutil.copy(SYSTEM_FONT, font)
    vault.open("taxes")
    inside = vault.run("run", "taxes", "--", "fc-list", check=True).stdout
    vault.run("lock", "taxes", check=True)
    assert str(font) in inside
