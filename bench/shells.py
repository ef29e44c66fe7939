"""Issue 6, items 3-5: what the shell integrations cost at the keyboard.

3. Prompt: per-prompt cost of bash, zsh and xonsh, with and without the
   integration, outside and inside a vault, plus the forks per prompt.
4. Completion: a vault name by TAB among 10 and 500 vaults (bash, zsh), and
   the processes it starts.
5. Enter to first prompt: `vault enter shv` on an open vault against the
   shell's own `bash -i` / `zsh -i` / `xonsh -i`, typed in the same outer
   shell, with the rc's `eval "$(nsshell init ...)"` and with it cached.

Everything is typed into real interactive shells through a pty (pexpect),
each in the throwaway HOME of the harness's Lab.  Contenders are measured
round by round, interleaved, and reported as medians, so the machine's noise
hits them alike.  Forks are counted with strace attached to the shell.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pexpect

XONSH = str(Path(sys.executable).parent / "xonsh")
BASH = shutil.which("bash") or "/bin/bash"
ZSH = shutil.which("zsh") or "/usr/bin/zsh"
PATHS = {"bash": BASH, "zsh": ZSH, "xonsh": XONSH}
# The interpreter the installs under test run on (a venv's python links to it).
FLOOR_PYTHON = os.path.realpath(sys.executable)
VAULT = "shv"

# CSI, OSC, other escapes, readline's \001 \002, CR, BS, BEL.  Cursor-forward
# moves become spaces first (prompt_toolkit draws spaces that way).
_ESC = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_=>()78][0-9A-Za-z]?|[\x01\x02\r\b\x07]")
_FWD = re.compile(r"\x1b\[(\d*)C")


def clean(raw):
    tail = raw.rfind("\x1b")
    if tail != -1 and not _ESC.match(raw, tail):
        raw = raw[:tail]
    return _ESC.sub("", _FWD.sub(lambda m: " " * int(m.group(1) or 1), raw))


class Tty:
    """One interactive shell on a pty.  `expect` looks only at what arrived
    since the last match, and returns the perf_counter time it matched."""

    def __init__(self, argv, env, cwd):
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=str(cwd), encoding="utf-8",
                                   codec_errors="replace", timeout=60, dimensions=(50, 250))
        self.child.delaybeforesend = None
        self.raw = ""
        self.pos = 0

    @property
    def pid(self):
        return self.child.pid

    def send(self, text):
        self.child.send(text)

    def expect(self, pattern, timeout=60):
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = clean(self.raw)
            found = regex.search(text, self.pos)
            if found:
                now = time.perf_counter()
                self.pos = found.end()
                if len(self.raw) > 20000:
                    self.raw, self.pos = text[self.pos:], 0
                return now, found
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"bench shells: no {pattern!r}; screen:\n{text[-2000:]}")
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=min(left, 1.0))
            except pexpect.TIMEOUT:
                pass
            except pexpect.EOF:
                raise RuntimeError(f"bench shells: shell ended before {pattern!r}; screen:\n{clean(self.raw)[-2000:]}")

    def close(self):
        if self.child.isalive():
            self.child.close(force=True)


# --- the lab's shells ------------------------------------------------------------------

BASHRC = """\
PS1='L${SHLVL}>'
HISTFILE=~/.bash_history HISTSIZE=1000 HISTFILESIZE=1000
case ${NSB_INIT-} in
eval) eval "$(nsshell init bash)" ;;
cached) . "${XDG_CACHE_HOME:-$HOME/.cache}/nsshell/init.bash" 2>/dev/null || eval "$(nsshell init bash)" ;;
esac
"""

ZSHRC = """\
PROMPT='L%L>'
unset zle_bracketed_paste
HISTFILE=~/.zsh_history SAVEHIST=1000 HISTSIZE=1000
autoload -Uz compinit && compinit -u
case ${NSB_INIT-} in
(eval) eval "$(nsshell init zsh)" ;;
(cached) . "${XDG_CACHE_HOME:-$HOME/.cache}/nsshell/init.zsh" 2>/dev/null || eval "$(nsshell init zsh)" ;;
esac
"""

XONSHRC = """\
$PROMPT = 'L{$SHLVL}>'
$AUTO_SUGGEST = False
if $NSB_INIT != 'none':
    xontrib load nsshell
"""

# A command that prints Q<n>; its echo on the screen does not contain Q<n>.
# (xonsh's echo is an external program; print() is not.)
MARK = {"bash": "echo Q$((0+{n}))", "zsh": "echo Q$((0+{n}))", "xonsh": "print('Q' + str(0+{n}))"}


class Shells:
    def __init__(self, lab):
        self.lab = lab
        home = lab.home
        (home / ".cache").mkdir(exist_ok=True)
        (home / ".inputrc").write_text("set enable-bracketed-paste off\nset bell-style none\n")
        (home / ".bashrc").write_text(BASHRC)
        (home / ".zshenv").write_text("unsetopt GLOBAL_RCS\n")
        (home / ".zshrc").write_text(ZSHRC)
        (home / ".xonshrc").write_text(XONSHRC)
        for kind in ("bash", "zsh"):
            lab.nsshell("init", kind)  # writes the cache the README line sources
        self.open = []
        self.counter = 1000

    def env(self, kind, init="cached", **extra):
        env = dict(self.lab.env)
        env.update({
            "TERM": "xterm-256color", "SHLVL": "0", "SHELL": PATHS[kind], "PROMPT_TOOLKIT_NO_CPR": "1",
            "XONTRIBS_AUTOLOAD_DISABLED": "1", "INPUTRC": str(self.lab.home / ".inputrc"), "NSB_INIT": init,
        })
        env.update(extra)
        return env

    def start(self, kind, where="outside", init="cached", vault=None, **extra):
        """An interactive shell: outside, inside by `nsshell run` (no
        integration: init='none'), or inside by `nsshell enter`."""
        path, vault = PATHS[kind], vault or VAULT
        if where == "outside":
            argv = [path, "-i"]
        elif init == "none":
            argv = [self.lab.exe, "run", vault, "--", path, "-i"]
        else:
            argv = [self.lab.exe, "enter", vault, "--shell", path]
        tty = Tty(argv, self.env(kind, init, **extra), self.lab.home)
        self.open.append(tty)
        tty.expect(r"L\d>")
        self.sync(kind, tty)
        return tty

    def sync(self, kind, tty, before=""):
        """Type `before` then a marker command; return the time the prompt after
        the marker's output was drawn."""
        self.counter += 1
        tty.send(before + MARK[kind].format(n=self.counter) + "\r")
        now, _ = tty.expect(r"Q%d\b[\s\S]*?L\d>" % self.counter)
        return now

    def close(self):
        for tty in self.open:
            tty.close()
        self.open = []


def med(values):
    return statistics.median(values) if values else float("nan")


# --- forks, counted by strace attached to the shell ----------------------------------------


class ForkCounter:
    """strace -f on a running shell (all its threads): processes it starts,
    i.e. fork/vfork/clone without CLONE_THREAD, and execve."""

    def __init__(self, pid, out):
        self.out = out
        self.proc = subprocess.Popen(
            ["strace", "-f", "-qq", "-e", "trace=clone,clone3,fork,vfork,execve", "-o", str(out), "-p", str(pid)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # attached once the tracer shows in /proc
            try:
                with open(f"/proc/{pid}/status") as f:
                    if any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f):
                        break
            except OSError:
                break
            time.sleep(0.01)
        time.sleep(0.1)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        forks = execs = 0
        for line in Path(self.out).read_text(errors="replace").splitlines():
            call = re.match(r"\d+\s+(\w+)\(", line)
            if not call:
                continue  # '<... resumed>' halves, exits, signals
            name = call.group(1)
            if name in ("fork", "vfork") or (name in ("clone", "clone3") and "CLONE_THREAD" not in line):
                forks += 1
            elif name == "execve":
                execs += 1
        return forks, execs


# --- 3. prompt ---------------------------------------------------------------------------

PROMPT_VARIANTS = [
    ("outside", "none", "outside, no integration"),
    ("outside", "cached", "outside, integration loaded"),
    ("inside", "none", "inside (`nsshell run shv -- SHELL -i`), no integration"),
    ("inside", "cached", "inside (`vault enter shv`), integration"),
]

# In-process cost of the prompt's work: what runs before each prompt
# (PROMPT_COMMAND / precmd_functions) plus expanding the prompt string,
# timed with the shell's own clock over many iterations, minus an empty loop.
INPROC = {
    "bash": (
        "__nsb_t() { local i s e x n=$1; "
        "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do :; done; e=$EPOCHREALTIME; local base=$(( ${e/./}-${s/./} )); "
        "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do eval \"${PROMPT_COMMAND-}\"; x=${PS1@P}; done; e=$EPOCHREALTIME; "
        "echo \"W$(( (${e/./}-${s/./}-base)*1000/n ))W\"; }"
    ),
    "zsh": (
        "zmodload zsh/datetime; __nsb_t() { local i s e x f n=$1 base; "
        "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do :; done; e=$EPOCHREALTIME; base=$(( e-s )); "
        "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do for f in $precmd_functions; do $f; done; x=${(%)PROMPT}; done; "
        "e=$EPOCHREALTIME; local -i r; (( r = (e-s-base)*1e9/n )); echo \"W${r}W\"; }"
    ),
}


def bench_prompt(shells, rounds, quick):
    kinds = ("bash", "zsh", "xonsh")
    batch = {"bash": 100, "zsh": 100, "xonsh": 15 if quick else 25}
    ttys = {(k, w, i): shells.start(k, w, i) for k in kinds for w, i, _ in PROMPT_VARIANTS}
    for (k, w, i), tty in ttys.items():
        if k in INPROC:
            shells.sync(k, tty, INPROC[k] + "\r")
    per_prompt = {key: [] for key in ttys}
    round_trip = {key: [] for key in ttys}
    trips = {"bash": 10, "zsh": 10, "xonsh": 3 if quick else 5}
    inproc = {key: [] for key in ttys if key[0] in INPROC}
    n_inproc = 200 if quick else 500
    for r in range(rounds):
        keys = list(ttys)
        if r % 2:
            keys.reverse()
        for key in keys:
            kind, tty = key[0], ttys[key]
            start = time.perf_counter()
            done = shells.sync(kind, tty, "\r" * batch[kind])
            per_prompt[key].append((done - start) / (batch[kind] + 1))
            for _ in range(trips[kind]):
                start = time.perf_counter()
                tty.send("\r")
                done, _ = tty.expect(r"L\d>")
                round_trip[key].append(done - start)
            if key in inproc:
                shells.counter += 1
                tty.send(f"__nsb_t {n_inproc}\r")
                _, found = tty.expect(r"W(-?\d+)W")
                inproc[key].append(int(found.group(1)) / 1000)  # ns -> µs
                shells.sync(kind, tty)
    # Forks per prompt, inside with the integration (the hook runs), with a
    # control command that must be seen.
    forks = {}
    for kind in kinds:
        tty = ttys[(kind, "inside", "cached")]
        counter = ForkCounter(tty.pid, shells.lab.root / f"strace-{kind}.txt")
        n = 50
        shells.sync(kind, tty, "\r" * n)
        before = counter.stop()
        counter = ForkCounter(tty.pid, shells.lab.root / f"strace-{kind}-control.txt")
        shells.sync(kind, tty, "/bin/true\r")
        control = counter.stop()
        forks[kind] = (n + 1, before, control)

    lines = [
        "### 3. Prompt: cost per prompt",
        "",
        "Through a pty: a batch of empty command lines typed ahead into one interactive shell "
        f"({batch['bash']} for bash and zsh, {batch['xonsh']} for xonsh), timed until the prompt after a final marker "
        "command, divided by the number of prompts; the shell reads each line, runs its pre-prompt hooks and draws "
        "the prompt. Medians over rounds, the four variants interleaved. `inside, no integration` is the plain shell "
        "started by `nsshell run shv -- SHELL -i` (the rc skips the integration); `inside, integration` is `nsshell enter shv`.",
        "",
        "Round trip: one Enter, timed until the next prompt is on the screen (what a user waits for; includes "
        "the pty and this harness's reading).",
        "",
        "| shell | variant | round trip µs | overhead | typed-ahead µs per prompt | overhead | in-process µs |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for kind in kinds:
        for where, init, label in PROMPT_VARIANTS:
            key = (kind, where, init)
            value = med(per_prompt[key]) * 1e6
            base = med(per_prompt[(kind, where, "none")]) * 1e6
            ratio = "" if init == "none" else f"{(value / base - 1) * 100:+.1f}%"
            trip = med(round_trip[key]) * 1e6
            trip_base = med(round_trip[(kind, where, "none")]) * 1e6
            trip_ratio = "" if init == "none" else f"{(trip / trip_base - 1) * 100:+.1f}%"
            ip = f"{med(inproc[key]):.1f}" if key in inproc else "n/a"
            lines.append(f"| {kind} | {label} | {trip:.0f} | {trip_ratio} | {value:.0f} | {ratio} | {ip} |")
    lines += [
        "",
        "In-process µs: the prompt's own work timed by the shell's `EPOCHREALTIME` over "
        f"{n_inproc} iterations, minus an empty loop: bash `eval \"$PROMPT_COMMAND\"` + `${{PS1@P}}`, zsh every "
        "`precmd_functions` entry + `${(%)PROMPT}`. The difference between the integration rows and the plain rows "
        "is what the integration adds to each prompt, without the pty's noise.",
        "",
    ]
    for kind in ("bash", "zsh"):
        extra = med(inproc[(kind, "inside", "cached")]) - med(inproc[(kind, "inside", "none")])
        base = med(per_prompt[(kind, "inside", "none")]) * 1e6
        trip = med(round_trip[(kind, "inside", "none")]) * 1e6
        lines.append(f"- {kind}: the integration adds {extra:.1f} µs of in-process work per prompt inside a vault: "
                     f"{extra / trip * 100:.1f}% of a plain prompt's round trip ({trip:.0f} µs), "
                     f"{extra / base * 100:.1f}% of a typed-ahead prompt ({base:.0f} µs).")
    lines += ["", "Processes started while drawing prompts inside a vault (strace -f attached to the shell; "
              "clone without CLONE_THREAD, fork, vfork; execve):", "",
              "| shell | prompts | forks | execs | control `/bin/true`: forks, execs |", "|---|---:|---:|---:|---|"]
    for kind in kinds:
        n, (f, e), (cf, ce) = forks[kind]
        lines.append(f"| {kind} | {n} | {f} | {e} | {cf}, {ce} |")
    for tty in ttys.values():
        tty.close()
    return "\n".join(lines) + "\n"


# --- 4. completion -------------------------------------------------------------------------


def names_config(lab, count):
    config = lab.root / f"cfg{count}"
    names = config / "nsshell" / "names"
    names.mkdir(parents=True, exist_ok=True)
    for i in range(count - 1):
        (names / f"n{i:03d}").touch()
    (names / "target").touch()
    return config


BASH_COMPLETE_INPROC = (
    "__nsb_c() { local i s e n=$1 base; "
    "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do :; done; e=$EPOCHREALTIME; base=$(( ${e/./}-${s/./} )); "
    "s=$EPOCHREALTIME; for ((i=0;i<n;i++)); do COMP_WORDS=(vault enter targ); COMP_CWORD=2; __nsshell_complete; done; "
    "e=$EPOCHREALTIME; echo \"W$(( (${e/./}-${s/./}-base)*1000/n ))W${COMPREPLY[*]}\"; }"
)


def bench_completion(shells, rounds, quick):
    lab = shells.lab
    counts = (10, 500)
    configs = {c: names_config(lab, c) for c in counts}
    ttys = {(k, c): shells.start(k, "outside", "cached", XDG_CONFIG_HOME=str(configs[c])) for k in ("bash", "zsh") for c in counts}
    for c in counts:
        shells.sync("bash", ttys[("bash", c)], BASH_COMPLETE_INPROC + "\r")
    tab = {key: [] for key in ttys}
    inproc = {c: [] for c in counts}
    for r in range(rounds):
        keys = list(ttys) if r % 2 == 0 else list(reversed(ttys))
        for key in keys:
            kind, tty = key[0], ttys[key]
            tty.send("vault enter targ")
            tty.expect(r"targ")
            start = time.perf_counter()
            tty.send("\t")
            done, _ = tty.expect(r"et ")
            tab[key].append(done - start)
            shells.sync(kind, tty, "\x15")
            if kind == "bash" and r < max(3, rounds // 2):
                tty.send("__nsb_c 100\r")
                _, found = tty.expect(r"W(-?\d+)W(\S*)")
                assert found.group(2) == "target", found.group(0)
                inproc[key[1]].append(int(found.group(1)) / 1000)
                shells.sync(kind, tty)
    procs = {}
    for kind in ("bash", "zsh"):
        tty = ttys[(kind, 500)]
        counter = ForkCounter(tty.pid, lab.root / f"strace-tab-{kind}.txt")
        for _ in range(20):
            tty.send("vault enter targ\t")
            tty.expect(r"et ")
            shells.sync(kind, tty, "\x15")
        procs[kind] = counter.stop()
    lines = [
        "### 4. Completion: `vault enter targ<TAB>` → `target`",
        "",
        "Through a pty: type `vault enter targ`, wait for it to show, time TAB until the completed name is drawn. "
        "Names are empty files in `$XDG_CONFIG_HOME/nsshell/names/` (`target` plus `n000`…), read by a glob. "
        "bash in-process: `__nsshell_complete` timed by `EPOCHREALTIME` (100 calls).",
        "",
        "| shell | vaults | TAB round trip ms (median) | p90 ms | in-process ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind in ("bash", "zsh"):
        for c in counts:
            values = sorted(tab[(kind, c)])
            ip = f"{med(inproc[c]) / 1000:.3f}" if kind == "bash" else "n/a"
            lines.append(f"| {kind} | {c} | {med(values) * 1000:.2f} | {values[int(0.9 * (len(values) - 1))] * 1000:.2f} | {ip} |")
    lines += ["", "Processes started by 20 TABs among 500 names (strace -f attached to the shell): " + ", ".join(
        f"{kind} {f} forks, {e} execs" for kind, (f, e) in procs.items()) + ". No process, so no Python.", ""]
    for tty in ttys.values():
        tty.close()
    return "\n".join(lines) + "\n"


# --- 5. enter to first prompt ----------------------------------------------------------------


def bench_enter(shells, rounds, quick):
    lab = shells.lab
    lab.open(VAULT)
    plan = {"bash": ("eval", "cached"), "zsh": ("eval", "cached"), "xonsh": ("xontrib",)}
    results = {}
    for kind, inits in plan.items():
        n = rounds if kind != "xonsh" else max(3, rounds // 3)
        outer = shells.start(kind, "outside", "cached")
        contenders = ("plain", "floor", "enter", "before") if lab.before else ("plain", "floor", "enter")
        times = {(init, what): [] for init in inits for what in contenders}
        # floor: what any Python client on the way in costs at least (the
        # same interpreter, without site), then the same shell.
        commands = {"plain": f"{kind} -i", "floor": f"{FLOOR_PYTHON} -S -c pass && {kind} -i",
                    "enter": f"vault enter {VAULT}", "before": f"{lab.before} enter {VAULT} --shell {PATHS[kind]}"}
        for r in range(n + 1):  # round 0 warms caches
            for init in inits:
                if kind != "xonsh":
                    shells.sync(kind, outer, f"export NSB_INIT={init}\r")
                order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                for what in order:
                    command = commands[what]
                    start = time.perf_counter()
                    outer.send(command + "\r")
                    done, _ = outer.expect(r"L2>")
                    if r:
                        times[(init, what)].append(done - start)
                    outer.send("exit\r")
                    outer.expect(r"L1>")
                    shells.sync(kind, outer)
        outer.close()
        results[kind] = times
    lines = [
        "### 5. Enter to first prompt",
        "",
        "Typed in an outer interactive shell that has the integration: the time from Enter on the command to the "
        "inner shell's first prompt (`L2>`). The vault is open (no passphrase). `SHELL -i` is the same shell "
        "started plainly with the same rc; both are interleaved round by round. rc `eval`: the rc runs "
        "`eval \"$(nsshell init SHELL)\"` (a Python start per shell); rc `cached`: it sources the saved output. "
        "xonsh's rc runs `xontrib load nsshell` (in-process, no extra Python start). "
        "Python floor: `python3 -S -c pass && SHELL -i`, the least any Python client on the way in adds "
        "(the interpreter nsshell runs on, without site); above floor = `vault enter` minus that row.",
        "",
        "| shell | rc | `SHELL -i` ms | Python floor ms | `vault enter shv` ms | overhead ms | above floor ms |"
        + (" before: `nsshell enter shv` ms | overhead ms |" if lab.before else ""),
        "|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if lab.before else ""),
    ]
    for kind, times in results.items():
        for init in plan[kind]:
            plain = med(times[(init, "plain")]) * 1000
            floor = med(times[(init, "floor")]) * 1000
            enter = med(times[(init, "enter")]) * 1000
            row = f"| {kind} | {init} | {plain:.1f} | {floor:.1f} (+{floor - plain:.1f}) | {enter:.1f} | {enter - plain:+.1f} | {enter - floor:+.1f} |"
            if lab.before:
                before = med(times[(init, "before")]) * 1000
                row += f" {before:.1f} | {before - plain:+.1f} |"
            lines.append(row)
    lines.append("")
    return "\n".join(lines) + "\n"


RC_LINES = {
    "none": "",
    "README line (fresh cache)": ". \"${XDG_CACHE_HOME:-$HOME/.cache}/nsshell/init.{kind}\" 2>/dev/null || eval \"$(nsshell init {kind})\"",
    "eval \"$(nsshell init SHELL)\"": "eval \"$(nsshell init {kind})\"",
    "eval \"$(zoxide init SHELL)\"": "eval \"$(zoxide init {kind})\"",
}


def bench_rc_line(lab, rounds):
    """What one rc line adds to every new interactive shell: `bash -i -c
    true` / `zsh -i -c true` with each rc, interleaved round by round."""
    from bench.timing import Sample

    kinds = ("bash", "zsh")
    lines = ["### 0. The rc line: cost per new interactive shell", "",
             "`bash -i -c true` with `--rcfile` set to a file holding only that line; `zsh -i -c true` with "
             "`ZDOTDIR` at a directory whose `.zshrc` holds it. Interleaved round by round; the README line's "
             "cache was written by an earlier `nsshell init`.", "",
             "| shell | rc line | median ms | p90 ms | added ms |", "|---|---|---:|---:|---:|"]
    lab.nsshell("init", "bash")
    lab.nsshell("init", "zsh")
    has_zoxide = shutil.which("zoxide") is not None
    contenders = []
    for kind in kinds:
        for label, line in RC_LINES.items():
            if "zoxide" in label and not has_zoxide:
                continue
            rc = lab.root / f"rc-{kind}-{len(contenders)}"
            rc.mkdir()
            (rc / ".zshrc").write_text(line.replace("{kind}", kind) + "\n")
            (rc / "bashrc").write_text(line.replace("{kind}", kind) + "\n")
            argv = [BASH, "--rcfile", str(rc / "bashrc"), "-i", "-c", "true"] if kind == "bash" else [ZSH, "-i", "-c", "true"]
            contenders.append((kind, label, argv, {"ZDOTDIR": str(rc)} if kind == "zsh" else {}))
        if lab.before:
            rc = lab.root / f"rc-{kind}-{len(contenders)}"
            rc.mkdir()
            line = f'eval "$({lab.before} init {kind})"'
            (rc / ".zshrc").write_text(line + "\n")
            (rc / "bashrc").write_text(line + "\n")
            argv = [BASH, "--rcfile", str(rc / "bashrc"), "-i", "-c", "true"] if kind == "bash" else [ZSH, "-i", "-c", "true"]
            contenders.append((kind, "before: eval \"$(nsshell init SHELL)\"", argv, {"ZDOTDIR": str(rc)} if kind == "zsh" else {}))
    devnull = os.open(os.devnull, os.O_RDWR)
    times = {i: [] for i in range(len(contenders))}
    try:
        for r in range(rounds + 3):
            for i, (kind, label, argv, extra) in enumerate(contenders):
                env = dict(lab.env, **extra)
                start = time.perf_counter()
                pid = os.posix_spawn(argv[0], argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)])
                os.waitpid(pid, 0)
                if r >= 3:
                    times[i].append(time.perf_counter() - start)
    finally:
        os.close(devnull)
    base = {}
    for i, (kind, label, argv, extra) in enumerate(contenders):
        sample = Sample(label, times[i])
        if label == "none":
            base[kind] = sample.median
        added = "" if label == "none" else f"{(sample.median - base[kind]) * 1000:+.1f}"
        lines.append(f"| {kind} | {label.replace('SHELL', kind)} | {sample.median * 1000:.2f} | {sample.p90 * 1000:.2f} | {added} |")
    if not has_zoxide:
        lines.append("\n(zoxide is not installed: no zoxide row)")
    return "\n".join(lines) + "\n"


def report(lab, rounds, quick):
    missing = [p for p in ("strace",) if not shutil.which(p)]
    if missing or not os.path.exists(XONSH):
        return f"### 3–5. Shells\n\nskipped: missing {', '.join(missing) or XONSH}\n"
    if not (lab.home / ".config" / "nsshell" / "names" / VAULT).exists():
        lab.create(VAULT)
    lab.open(VAULT)
    shells = Shells(lab)
    parts = []
    try:
        started = time.monotonic()
        # NSB_SHELL_PARTS=rc,enter: only those tables (e.g. for more rounds of them).
        chosen = os.environ.get("NSB_SHELL_PARTS", "rc,prompt,completion,enter").split(",")
        if "rc" in chosen:
            parts.append(bench_rc_line(lab, rounds))
        if "prompt" in chosen:
            parts.append(bench_prompt(shells, max(5, rounds // 4), quick))
        if "completion" in chosen:
            parts.append(bench_completion(shells, max(10, rounds // 2), quick))
        if "enter" in chosen:
            parts.append(bench_enter(shells, max(5, rounds // 4), quick))
        parts.append(f"(shells section: {time.monotonic() - started:.0f} s)\n")
    finally:
        shells.close()
    return "\n".join(parts)
