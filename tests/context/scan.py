"""Look for what must never reach the host: canary strings in file
contents, and secret words in file names."""

import os
import stat

READ_LIMIT = 4 << 20  # bytes read per file: histories and temp files are small


def scan(roots, needles, skip=()):
    """[(path, needle)] for every file under roots whose name or contents
    hold a needle.  Unreadable files (another user's) are passed over;
    paths under skip (the ciphertext) are not looked at."""
    needles = [n.encode() for n in needles]
    skip = [os.path.realpath(s) for s in skip]
    hits = []
    for root in roots:
        for directory, subdirs, files in os.walk(root, onerror=lambda e: None):
            real = os.path.realpath(directory)
            if any(real == s or real.startswith(s + "/") for s in skip):
                subdirs[:] = []
                continue
            for name in subdirs + files:
                for needle in needles:
                    if needle in os.fsencode(name):
                        hits.append((os.path.join(directory, name), needle.decode()))
            for name in files:
                path = os.path.join(directory, name)
                try:
                    # Regular files only: opening another test's FIFO in the
                    # shared /tmp would wait for a writer for ever.
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        continue
                    data = os.read(fd, READ_LIMIT)
                except OSError:
                    continue
                finally:
                    os.close(fd)
                for needle in needles:
                    if needle in data:
                        hits.append((path, needle.decode()))
    return hits
