"""Drive a real interactive shell through a pty, and read its screen output
as text: escape codes, carriage returns and backspaces stripped.

Wait for something the typed command itself cannot contain (see
/work/shared/SHELL-FACTS.md, "Driving real shells in tests"): type
`echo in-vault:$NSSHELL_VAULT`, wait for `in-vault:taxes`.
"""

import re
import time

import pexpect

TIMEOUT = 30.0

# CSI and OSC sequences, other two-byte escapes, and readline's \001 \002.
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_=>()][0-9A-Za-z]?|[\x01\x02\r\b\x07]")


def clean(raw):
    """Screen text of raw terminal output (stable as raw grows)."""
    tail = raw.rfind("\x1b")
    if tail != -1 and not _ESCAPES.match(raw, tail):
        raw = raw[:tail]  # an escape sequence that has not fully arrived yet
    return _ESCAPES.sub("", raw)


class Shell:
    def __init__(self, argv, env, cwd):
        self.child = pexpect.spawn(
            argv[0], argv[1:], env=env, cwd=str(cwd), encoding="utf-8", codec_errors="replace",
            timeout=TIMEOUT, dimensions=(50, 250),
        )
        self.child.delaybeforesend = None  # pexpect sleeps 50 ms before every send otherwise
        self.raw = ""
        self.pos = 0  # how much of clean(raw) has been consumed by expect()

    def _read(self, wait):
        try:
            self.raw += self.child.read_nonblocking(65536, timeout=wait)
            return True
        except pexpect.TIMEOUT:
            return False
        except pexpect.EOF:
            return None

    def expect(self, pattern, timeout=TIMEOUT):
        """Wait for regex pattern in the text after the last match; return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = clean(self.raw)
            found = regex.search(text, self.pos)
            if found:
                self.pos = found.end()
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; screen text since last match:\n{text[self.pos:]}")
            if self._read(0.2) is None:
                text = clean(self.raw)
                found = regex.search(text, self.pos)
                if found:
                    self.pos = found.end()
                    return found
                raise AssertionError(f"shell ended while waiting for {pattern!r}; output:\n{text[self.pos:]}")

    def since(self, start):
        """Text between two positions (e.g. between a command and its prompt)."""
        return clean(self.raw)[start : self.pos]

    def send(self, text):
        self.child.send(text)

    def run(self, command, prompt):
        """Type command + Enter, wait for the next prompt; return the text in between."""
        start = self.pos
        self.send(command + "\r")
        self.expect(prompt)
        return self.since(start)

    def wait_exit(self, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while self._read(0.2) is not None:
            if time.monotonic() > deadline:
                raise AssertionError(f"shell did not exit; output:\n{clean(self.raw)[self.pos:]}")
        self.child.close()
        return self.child.exitstatus

    def close(self):
        if self.child.isalive():
            self.child.close(force=True)
