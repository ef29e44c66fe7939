"""The figures and screenshots of docs/gui.md: time from `nsshell run v --
mousepad FILE` (vault open, its private bus started on first use) to the
window mapped, next to mousepad started outside; and pictures of a window
inside next to an instance outside.

Run from the repository as an unprivileged user with the GUI programs
installed:  .venv/bin/python -m tests.gui.timing [ROUNDS] [SHOTS_DIR]
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import World  # noqa: E402

from tests.gui.apps import write_pdf_inside  # noqa: E402
from tests.gui.screen import Desktop  # noqa: E402


def _time_to_window(desktop, argv, title, env=None):
    # Polled here: `xdotool search --sync` looks only every 0.5 s, which
    # would round every figure up to a multiple of that.
    start = time.monotonic()
    proc = desktop.start(argv, env=env)
    while not desktop.windows(title):
        if time.monotonic() - start > 300:
            raise AssertionError(f"no window {title!r} after 300 s")
    elapsed = time.monotonic() - start
    proc.terminate()
    proc.wait(timeout=60)
    return elapsed


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    shots = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    root = tempfile.mkdtemp(prefix="nsg", dir="/tmp")
    world = World(root)
    desktop = None
    try:
        mountpoint = world.create("v")
        desktop = Desktop(root, world.env)
        world.env = desktop.env
        world.open("v")
        doc = mountpoint / "taxes-2025.txt"
        world.run("run", "v", "--", "sh", "-c", f"printf 'Vault file: taxes 2025\\nrefund: 1234.56\\n' > {doc}", check=True)
        host_doc = world.home / "shopping.txt"
        host_doc.write_text("Host file: shopping list\nmilk, bread\n")
        outside_times, inside_times = [], []
        for _ in range(rounds):
            outside_times.append(_time_to_window(desktop, ["mousepad", str(host_doc)], "shopping"))
            inside_times.append(_time_to_window(desktop, [world.exe, "run", "v", "--", "mousepad", str(doc)], "taxes-2025"))
        print(f"outside: median {statistics.median(outside_times):.2f} s of {[round(t, 2) for t in outside_times]}")
        print(f"inside:  median {statistics.median(inside_times):.2f} s of {[round(t, 2) for t in inside_times]}")
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
            outside = desktop.start(["mousepad", str(host_doc)])
            outside_window = desktop.wait_window("shopping")
            desktop.start([world.exe, "run", "v", "--", "mousepad", str(doc)])
            inside_window = desktop.wait_window("taxes-2025")
            subprocess.run(["xdotool", "windowmove", inside_window, "0", "0", "windowsize", inside_window, "480", "300",
                            "windowmove", outside_window, "500", "0", "windowsize", outside_window, "480", "300"],
                           env=desktop.env, check=True)
            time.sleep(2)
            for window, name in ((inside_window, "mousepad-inside"), (outside_window, "mousepad-outside")):
                desktop.screenshot(shots / f"{name}.png", window)
            # Both side by side (no window manager: no title bars).
            both = shots / "mousepad-both.png"
            desktop.screenshot(both)
            subprocess.run(["convert", str(both), "-crop", "985x305+0+0", "+repage", str(both)], check=True)
            write_pdf_inside(world, mountpoint / "statement.pdf", "Vault PDF: bank statement", Path(root), name="v")
            desktop.start([world.exe, "run", "v", "--", "evince", str(mountpoint / "statement.pdf")])
            viewer = desktop.wait_window("statement")
            subprocess.run(["xdotool", "windowsize", viewer, "480", "360"], env=desktop.env, check=True)
            time.sleep(3)
            desktop.screenshot(shots / "evince-inside.png", viewer)
            outside.terminate()
    finally:
        if desktop:
            world.run("lock", "--all", "--force")
            desktop.stop()
        subprocess.run(["rm", "-rf", root])


if __name__ == "__main__":
    os.environ.setdefault("LANG", "C.UTF-8")
    main()
