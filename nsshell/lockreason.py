"""Why a vault locked by itself, told to the user twice.

(A `nsshell lock --force` from another terminal is told once: on the
terminals of the sessions it hangs up.  Whoever ran it knows already.)

When an auto-lock trigger (nsshell.autolock) locks a vault, the keeper
writes one line on the terminal of each session it is about to hang up
(``nsshell: vault 'taxes' locked: the screen was locked``), and leaves
``NAME.reason`` (0600, in the private runtime directory) for whoever opens
the vault next: ``nsshell enter/run/open`` print it once and remove it.
The keeper leaves one too when it locks because the mountpoint stopped
leading to the vault (DISPLACED, below), with what it found.

Imported by the keeper and on the unlock path: only ``os`` and ``time``.
"""

import os
import time

# The word a LOCK request carries (``LOCK force reason=WORD``), and what the user reads.
REASONS = {
    "suspend": "the system went to sleep",
    "screen-lock": "the screen was locked",
    "logout": "the desktop session ended",
    "idle": "nothing used it for {idle}",
    "autolock-failed": "its auto-lock watcher failed, and it locks rather than stay open unwatched (see its log)",
    "forced": "'nsshell lock --force' was run",
    "supervisor-lost": "its auto-lock watchers were stopped (its holder's supervisor was killed), and it locks rather than stay open unwatched",
}


# Not a word a LOCK request can carry: the keeper's own verdict when the
# mountpoint stopped leading to the vault (nsshell.holder, Keeper.displaced),
# recorded with what it found.  Its sessions are killed at once, with no
# time to write on their terminals, so the next unlock is where it is told.
DISPLACED = "displaced"
DISPLACED_TEXT = "its mountpoint stopped leading to the vault ({detail}), so its sessions were ended at once"

# Reasons left in NAME.reason for the next unlock: the locks nobody asked for.
RECORDED = (frozenset(REASONS) - {"forced"}) | {DISPLACED}


def reason_path(name, base):
    return os.path.join(base, f"{name}.reason")


def without_names_inside(text, mountpoint):
    """text cut at the first path below mountpoint (to "MOUNTPOINT/..."):
    NAME.reason lies in the host's runtime directory, readable by every
    process of the user while the vault is locked, and must name nothing
    inside the vault.  The keeper's texts end with such a path ("something
    is mounted inside the vault at PATH"), so nothing of it is lost but the
    name."""
    inside = mountpoint.rstrip("/") + "/"
    at = text.find(inside)
    return text if at < 0 else text[: at + len(inside)] + "..."


def describe(word, idle_seconds=0, detail=""):
    if word == DISPLACED:
        return DISPLACED_TEXT.replace("{detail}", detail or "see its log")
    text = REASONS.get(word, word)
    return text.replace("{idle}", _duration(idle_seconds))


def _duration(seconds):
    seconds = int(seconds)
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def record(name, base, word, detail=""):
    """Leave NAME.reason: '<unix time> <word>[ <detail>]', one line."""
    from nsshell.paths import create_private_file

    path = reason_path(name, base)
    tmp = f"{path}.tmp"
    line = f"{int(time.time())} {word}" + (f" {detail}" if detail else "")
    fd = create_private_file(tmp)  # never written through a planted symlink or file
    try:
        os.write(fd, line.replace("\n", " ").encode()[:MAX_RECORD - 1] + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)


MAX_RECORD = 4096  # bytes of NAME.reason: a detail names paths


def take(name, base):
    """(unix time, word, detail) from NAME.reason, which is removed; None if
    there is none."""
    path = reason_path(name, base)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECORD)
        os.unlink(path)
    except OSError:
        return None
    when, _, rest = raw.decode(errors="replace").strip().partition(" ")
    word, _, detail = rest.partition(" ")
    if not when.isdigit() or word not in RECORDED:
        return None
    return int(when), word, detail


def tell_terminals(pids, line):
    """Write line on the terminal of each of pids (once per terminal), so a
    user who comes back to a hung-up shell reads why.  Best effort: a
    session without a terminal (a GUI program) has nothing to write on."""
    seen = set()
    for pid in pids:
        for fd_number in (2, 0, 1):
            try:
                fd = os.open(f"/proc/{pid}/fd/{fd_number}", os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if not os.isatty(fd):
                    continue
                device = os.fstat(fd).st_rdev
                if device in seen:
                    break
                seen.add(device)
                os.write(fd, f"\r\n{line}\r\n".encode())
                break
            except OSError:
                continue
            finally:
                os.close(fd)
