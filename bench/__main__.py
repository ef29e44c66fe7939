"""nsshell benchmarks, measured side by side in one run.

    python -m bench                  # everything, prints markdown tables
    python -m bench --quick          # fewer rounds, smaller files
    python -m bench --only run unlock io scale
    python -m bench --write docs/benchmarks.md

Run as an unprivileged user with nsshell installed in the same Python (the
venv that scripts/test or scripts/demo makes).  Everything happens in a
throwaway HOME; the seed article's scripts are reproduced from
bench/seed/ and mounted the seed's way (unshare + daemonised gocryptfs).
Results are ratios within one run: never compare absolute times across
machines.
"""

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.timing import compare

HERE = Path(__file__).resolve().parent
SEED = HERE / "seed" / "nsrunenter"
LEAST_CLIENT = HERE / "least_python_client.py"
PASSPHRASE = "bench passphrase"


class Lab:
    """A throwaway HOME with nsshell vaults and a seed-style mount."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="nsb", dir="/tmp"))
        self.home = self.root / "h"
        self.runtime = self.root / "r"
        self.home.mkdir()
        self.runtime.mkdir(mode=0o700)
        self.passfile = self.root / "pass"
        self.passfile.write_text(PASSPHRASE + "\n")
        self.exe = os.environ.get("NSB_EXE") or str(Path(sys.executable).parent / "nsshell")
        # Another nsshell (e.g. main's), measured as an extra contender in
        # the same tables, interleaved: before and after in one run.
        self.before = os.environ.get("NSB_BEFORE") or None
        if not os.path.exists(self.exe):
            sys.exit("bench: nsshell is not installed next to this Python; run it from the project's venv")
        self.env = {
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            # The measured nsshell first, then this venv's (xonsh lives there).
            "PATH": f"{Path(self.exe).parent}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
        }
        self.seed_dir = self.root / "seed"
        self.seed_pid = None
        self.background = []

    def nsshell(self, *args, **kw):
        return subprocess.run([self.exe, *map(str, args)], env=self.env, check=True, capture_output=True, text=True, **kw)

    def create(self, name):
        self.nsshell("create", name, "--passfile", self.passfile)

    def open(self, name):
        self.nsshell("open", name, "--passfile", self.passfile, "-q")

    def exists(self, name):
        return (self.home / ".config" / "nsshell" / "names" / name).exists()

    def mountpoint(self, name):
        return str(self.home / "Vaults" / name)

    def holder_gone(self, name):
        return not (self.runtime / "nsshell" / f"{name}.state").exists()

    def wait_locked(self, name, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.holder_gone(name):
            if time.monotonic() > deadline:
                raise RuntimeError(f"vault {name} did not lock")
            time.sleep(0.005)

    # The seed article's way: gocryptfs daemonised inside `unshare -Umc`.
    def seed_mount(self, crypt="crypt", plain="plain"):
        self.seed_dir.mkdir(exist_ok=True)
        (self.seed_dir / crypt).mkdir(exist_ok=True)
        (self.seed_dir / plain).mkdir(exist_ok=True)
        if not (self.seed_dir / crypt / "gocryptfs.conf").exists():
            subprocess.run(
                ["gocryptfs", "-init", "-q", "-passfile", str(self.passfile), "--", crypt],
                cwd=self.seed_dir, check=True, capture_output=True,
            )
        subprocess.run(
            ["unshare", "--keep-caps", "-Umc", "/usr/bin/gocryptfs", "-q", "-nosyslog", "-fsname", "BLOGDEMO",
             "-passfile", str(self.passfile), crypt, plain],
            cwd=self.seed_dir, check=True, env=self.env,
        )
        out = subprocess.run(
            ["pgrep", "-u", str(os.getuid()), "-n", "-f", "^/usr/bin/gocryptfs.* -fsname BLOGDEMO "],
            capture_output=True, text=True, check=True,
        )
        self.seed_pid = int(out.stdout.split()[0])
        # As the seed script does: gocryptfs mounted this way refuses writes
        # until something has read the mountpoint (NAMESPACE-FACTS 6).
        subprocess.run(
            ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(self.seed_pid), "ls", str(self.seed_dir / plain)],
            check=True, capture_output=True,
        )
        return self.seed_pid

    def seed_unmount(self):
        if self.seed_pid:
            try:
                os.kill(self.seed_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(400):
                if not os.path.exists(f"/proc/{self.seed_pid}"):
                    break
                time.sleep(0.01)
            self.seed_pid = None

    def start_sessions(self, name, count):
        for _ in range(count):
            self.background.append(
                subprocess.Popen([self.exe, "run", name, "--", "sleep", "3600"], env=self.env, stdout=subprocess.DEVNULL)
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = json.loads(self.nsshell("status", name, "--json").stdout)
            if status["sessions"] >= count:
                return
            time.sleep(0.05)
        raise RuntimeError("sessions did not register")

    def close(self):
        for proc in self.background:
            proc.kill()
        subprocess.run([self.exe, "lock", "--all", "--force"], env=self.env, capture_output=True)
        self.seed_unmount()
        shutil.rmtree(self.root, ignore_errors=True)


def table(title, samples, baseline=0, note=""):
    base = samples[baseline].median
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines += ["| command | median ms | p90 ms | ratio to first row |", "|---|---:|---:|---:|"]
    for s in samples:
        lines.append(f"| `{s.name}` | {s.median * 1000:.2f} | {s.p90 * 1000:.2f} | {s.median / base:.2f}× |")
    return "\n".join(lines) + "\n"


# --- the measurements ----------------------------------------------------------------------


def bench_run(lab, rounds):
    lab.create("v")
    lab.open("v")
    seed_pid = lab.seed_mount()
    python = sys.executable
    before = [("nsshell run v -- true (before)", [lab.before, "run", "v", "--", "true"])] if lab.before else []
    samples = compare(
        [
            ("nsshell run v -- true", [lab.exe, "run", "v", "--", "true"]),
            *before,
            ("nsrunenter true (seed)", ["/bin/bash", str(SEED), "true"]),
            ("nsenter -U -m -t PID true", ["/usr/bin/nsenter", "--preserve-credentials", "-U", "-m", "-t", str(seed_pid), "/bin/true"]),
            ("python -c pass", [python, "-c", "pass"]),
            ("python -S -c pass", [python, "-S", "-c", "pass"]),
            ("least Python client (bench/least_python_client.py)", [python, "-S", str(LEAST_CLIENT), "v", "--", "true"]),
        ],
        rounds,
        lab.env,
        cwd=str(lab.seed_dir),
    )
    lab.seed_unmount()
    return table(
        "1. A command in an open vault",
        samples,
        note="The seed script's vault is mounted the seed's way (unshare + daemonised gocryptfs); "
        "`nsenter` joins that held namespace directly (the floor). `python -S -c pass` is the floor for any "
        "Python client, and the last row the least one can do to join (one file, no checks).",
    )


def bench_unlock(lab, rounds):
    if not lab.exists("v"):
        lab.create("v")
    lab.nsshell("lock", "v", "--force")
    lab.wait_locked("v")
    # Same gocryptfs -init defaults (scrypt N=2^16) for both cipher dirs.
    raw = lab.seed_dir
    raw.mkdir(exist_ok=True)
    (raw / "crypt2").mkdir(exist_ok=True)
    (raw / "plain2").mkdir(exist_ok=True)
    if not (raw / "crypt2" / "gocryptfs.conf").exists():
        subprocess.run(["gocryptfs", "-init", "-q", "-passfile", str(lab.passfile), "--", "crypt2"], cwd=raw, check=True, capture_output=True)
    raw_script = f"/usr/bin/gocryptfs -q -nosyslog -passfile {lab.passfile} crypt2 plain2 && ls plain2 >/dev/null && true; umount plain2"
    python = os.path.realpath(sys.executable)  # the interpreter the installs under test run on

    def settle(name):
        if name.startswith("nsshell"):
            lab.wait_locked("v")
        else:
            subprocess.run(["pgrep", "-f", "crypt2 plain2"], capture_output=True)
            for _ in range(400):
                if subprocess.run(["pgrep", "-u", str(os.getuid()), "-f", "gocryptfs.*crypt2"], capture_output=True).returncode:
                    break
                time.sleep(0.01)

    before = []
    if lab.before:
        before = [("nsshell run v --passfile F -- true (locked, before)",
                   [lab.before, "run", "v", "--passfile", str(lab.passfile), "--", "true"])]
    samples = compare(
        [
            ("nsshell run v --passfile F -- true (locked)", [lab.exe, "run", "v", "--passfile", str(lab.passfile), "--", "true"]),
            *before,
            ("unshare -Umc sh -c 'gocryptfs … && true; umount'", ["/usr/bin/unshare", "--keep-caps", "-Umc", "/bin/sh", "-c", raw_script]),
            # The floor of a Python client that starts a Python holder: two
            # interpreter starts (without site) in series, then the raw row.
            ("python -S -c pass twice, then the unshare row", ["/bin/sh", "-c", f"{python} -S -c pass && {python} -S -c pass && "
                                                             f"exec /usr/bin/unshare --keep-caps -Umc /bin/sh -c {shlex.quote(raw_script)}"]),
        ],
        max(3, rounds // 3),
        lab.env,
        cwd=str(raw),
        warmup=1,
        between=settle,
    )
    return table(
        "2. Unlock: a command on a locked vault",
        samples,
        note="Both include gocryptfs's scrypt key derivation at the same cost. nsshell's row includes starting "
        "the holder, verifying the mount and joining; the vault locks again (untimed) before the next round. "
        "The last row is the floor of any design whose Python client starts a Python holder: two interpreter "
        "starts without site, in series, then the unshare row.",
    )


def bench_io(lab, quick):
    size_mib = 32 if quick else 256
    files = 1000 if quick else 10000
    if not lab.exists("v"):
        lab.create("v")
    lab.open("v")
    seed_pid = lab.seed_mount()
    inside_vault = [lab.exe, "run", "v", "--"]
    inside_seed = ["/usr/bin/nsenter", "--preserve-credentials", "-U", "-m", "-t", str(seed_pid)]
    targets = {"nsshell vault": (inside_vault, lab.mountpoint("v")), "direct gocryptfs mount": (inside_seed, str(lab.seed_dir / "plain"))}
    python = sys.executable
    lines = [
        "### 6. I/O inside the vault vs the same gocryptfs mounted directly",
        "",
        "Each operation times itself inside the mount (so the cost of getting in is not counted); "
        "throughput ratio = direct time / vault time (1.00 = equal, above 1 = the vault is faster). "
        "Median of 5 runs, alternating between the two mounts.",
        "",
        "| operation | vault ms | direct ms | vault throughput vs direct |",
        "|---|---:|---:|---:|",
    ]
    operations = {
        f"write {size_mib} MiB (1 MiB writes, fsync)": "write",
        f"read {size_mib} MiB": "read",
        f"create {files} small files": "create",
        f"read {files} small files": "readsmall",
    }
    for label, op in operations.items():
        results = {}
        for _ in range(5):
            for name, (prefix, mp) in targets.items():
                out = subprocess.run(
                    prefix + [python, "-c", IO_SCRIPT, op, mp, str(size_mib), str(files)],
                    env=lab.env, capture_output=True, text=True,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{label} in {name} failed: {out.stderr.strip()}")
                results.setdefault(name, []).append(float(out.stdout))
        vault = sorted(results["nsshell vault"])[2]
        direct = sorted(results["direct gocryptfs mount"])[2]
        lines.append(f"| {label} | {vault * 1000:.0f} | {direct * 1000:.0f} | {direct / vault:.2f}× |")
    lab.seed_unmount()
    lab.nsshell("lock", "v", "--force")
    return "\n".join(lines) + "\n"


IO_SCRIPT = """
import os, sys, time
op, mp, size_mib, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
chunk = bytes(1 << 20)
small = os.path.join(mp, "small")
start = time.perf_counter()
if op == "write":
    with open(os.path.join(mp, "big"), "wb") as f:
        for _ in range(size_mib):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
elif op == "read":
    with open(os.path.join(mp, "big"), "rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
elif op == "create":
    os.makedirs(small, exist_ok=True)
    for i in range(files):
        with open(f"{small}/{i}", "w") as f:
            f.write("x" * 100)
elif op == "readsmall":
    for i in range(files):
        with open(f"{small}/{i}") as f:
            f.read()
print(time.perf_counter() - start)
"""


def _rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def bench_scale(lab, rounds, quick):
    lines = ["### 7. Scale", ""]
    if not lab.exists("v"):
        lab.create("v")
    lab.open("v")
    run_true = [lab.exe, "run", "v", "--", "true"]
    rows = []
    previous = 0
    for sessions in (1, 10, 100):
        lab.start_sessions("v", sessions - previous)
        previous = sessions
        rows.append((f"{sessions} sessions open", compare([("run", run_true)], rounds, lab.env)[0]))
    for proc in lab.background:
        proc.kill()
    lab.background.clear()
    vault_counts = (1, 8) if quick else (1, 8, 32)
    opened = 1
    for count in vault_counts:
        for i in range(opened, count):
            lab.create(f"s{i}")
            lab.open(f"s{i}")
        opened = max(opened, count)
        rows.append((f"{count} vaults open", compare([("run", run_true)], rounds, lab.env)[0]))
    lines += ["`nsshell run v -- true`:", "", "| situation | median ms | p90 ms |", "|---|---:|---:|"]
    for label, sample in rows:
        lines.append(f"| {label} | {sample.median * 1000:.2f} | {sample.p90 * 1000:.2f} |")
    state = json.loads((lab.runtime / "nsshell" / "v.state").read_text())
    parts = {role: _rss_kib(state[role][0]) for role in ("supervisor", "keeper", "backend")}
    lines += [
        "",
        f"Memory per open vault (RSS): supervisor {parts['supervisor'] / 1024:.1f} MiB + keeper "
        f"{parts['keeper'] / 1024:.1f} MiB + gocryptfs {parts['backend'] / 1024:.1f} MiB = "
        f"{sum(parts.values()) / 1024:.1f} MiB (shared pages counted in each).",
        "",
    ]
    lab.nsshell("lock", "--all", "--force")
    # `nsshell list` with many registered vaults (registry written directly).
    registry = lab.home / ".config" / "nsshell" / "vaults.toml"
    original = registry.read_text()
    existing = len(list((lab.home / ".config" / "nsshell" / "names").iterdir()))
    for count in (10, 500):
        extra = "".join(
            f'\n[vaults.many{i}]\ncipher_dir = "{lab.root}/c{i}"\nmountpoint = "{lab.root}/m{i}"\n' for i in range(count)
        )
        registry.write_text(original + extra)
        sample = compare([("list", [lab.exe, "list"])], rounds, lab.env)[0]
        lines.append(f"`nsshell list` with {existing + count} vaults: median {sample.median * 1000:.1f} ms, p90 {sample.p90 * 1000:.1f} ms  ")
    registry.write_text(original)
    return "\n".join(lines) + "\n"


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gocryptfs = subprocess.run(["gocryptfs", "-version"], capture_output=True, text=True).stdout.split(";")[0]
    return (
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, {gocryptfs}."
    )


BENCHES = ("run", "unlock", "io", "scale", "shells")


def _precompile():
    """Without up-to-date .pyc files every nsshell start compiles its modules
    again, and that, not nsshell, is what would be measured."""
    import compileall

    import nsshell

    package = os.path.dirname(nsshell.__file__)
    if not compileall.compile_dir(package, quiet=1):
        print(f"bench: warning: cannot write .pyc files in {package}; start-up figures include compiling", file=sys.stderr)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds and smaller files")
    parser.add_argument("--only", nargs="+", choices=BENCHES, help="run only these")
    parser.add_argument("--rounds", type=int, help="samples per contender (default 60, quick 15)")
    parser.add_argument("--write", metavar="FILE", help="also write the report to FILE (markdown)")
    parser.add_argument("--exe", metavar="PATH", help="the nsshell command to measure (default: this venv's); "
                        "e.g. a pipx install's, which starts without site where an editable install cannot")
    parser.add_argument("--before", metavar="PATH", help="another nsshell command (e.g. an install of main) measured "
                        "next to --exe, interleaved in the same tables")
    args = parser.parse_args(argv)
    if args.exe:
        os.environ["NSB_EXE"] = os.path.abspath(args.exe)
    if args.before:
        os.environ["NSB_BEFORE"] = os.path.abspath(args.before)
    if os.geteuid() == 0:
        sys.exit("bench: run as an unprivileged user (nsshell needs no root, and root changes what is measured)")
    rounds = args.rounds or (15 if args.quick else 60)
    _precompile()
    chosen = args.only or BENCHES
    lab = Lab()
    sections = [f"# nsshell benchmarks\n\n{machine()}\n\nRounds per contender: {rounds}. Generated by `python -m bench{' --quick' if args.quick else ''}`.\n"]
    try:
        for name in chosen:
            print(f"bench: {name} ...", file=sys.stderr)
            if name == "run":
                sections.append(bench_run(lab, rounds))
            elif name == "unlock":
                sections.append(bench_unlock(lab, rounds))
            elif name == "io":
                sections.append(bench_io(lab, args.quick))
            elif name == "scale":
                sections.append(bench_scale(lab, rounds, args.quick))
            elif name == "shells":
                from bench import shells

                sections.append(shells.report(lab, rounds, args.quick))
            print(sections[-1])
    finally:
        lab.close()
    if args.write:
        Path(args.write).write_text("\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
