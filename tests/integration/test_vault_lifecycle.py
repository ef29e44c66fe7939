"""Real namespaces, real gocryptfs, as an unprivileged user: the core contract."""

import json
import os
import signal
import stat
import subprocess
import threading
import time

import psutil
import pytest

from reliability import record


pytestmark = pytest.mark.namespaces


def test_file_written_inside_is_invisible_outside_and_persists(vault):
    mp = vault.mountpoint("taxes")
    out = vault.inside("taxes", f"echo 'tax data' > {mp}/2025.txt && cat {mp}/2025.txt && echo vault=$NSSHELL_VAULT")
    assert out.stdout.splitlines() == ["tax data", "vault=taxes"]
    # The vault locked when the command ended: nothing outside, nothing running.
    assert os.listdir(mp) == []
    vault.wait_until(lambda: vault.state("taxes")["state"] == "locked", what="auto-lock")
    assert vault.holder_pids() == []
    assert vault.runtime_files() == []
    # The ciphertext holds the data, encrypted (no plaintext name or content).
    cipher = vault.cipher_dir("taxes")
    names = os.listdir(cipher)
    assert "2025.txt" not in names and "gocryptfs.conf" in names
    for name in names:
        if os.path.isfile(cipher / name):
            assert b"tax data" not in (cipher / name).read_bytes()
    # Unlock again: the data is back.
    assert vault.inside("taxes", f"cat {mp}/2025.txt").stdout == "tax data\n"


def test_open_vault_is_invisible_to_every_other_process(vault):
    mp = vault.mountpoint("taxes")
    vault.open("taxes")
    vault.inside("taxes", f"echo secret > {mp}/s.txt")
    status = json.loads(vault.run("status", "taxes", "--json", check=True).stdout)
    assert status["state"] == "open" and status["sessions"] == 0
    # From this (outside) process and a fresh shell outside: an empty directory.
    assert os.listdir(mp) == []
    assert subprocess.run(["sh", "-c", f"ls -A {mp}"], capture_output=True, text=True).stdout == ""
    # The plaintext is still there for sessions.
    assert vault.run("run", "taxes", "--", "cat", f"{mp}/s.txt", check=True).stdout == "secret\n"
    # No process of ours can be entered or walked into while no session runs.
    reached = []
    for proc in psutil.process_iter(["pid", "uids"]):
        if proc.info["uids"] is None or proc.info["uids"].real != os.getuid() or proc.pid == os.getpid():
            continue
        try:
            if "s.txt" in os.listdir(f"/proc/{proc.pid}/root{mp}"):
                reached.append(("root", proc.pid))
        except OSError:
            pass
        entered = subprocess.run(
            ["nsenter", "--preserve-credentials", "-U", "-m", "-t", str(proc.pid), "cat", f"{mp}/s.txt"],
            capture_output=True,
            text=True,
        )
        if entered.returncode == 0:
            reached.append(("nsenter", proc.pid))
    assert reached == []


def test_runtime_directory_and_socket_are_private(vault):
    vault.open("taxes")
    runtime = vault.runtime / "nsshell"
    assert stat.S_IMODE(os.lstat(runtime).st_mode) == 0o700
    sock = runtime / "taxes.sock"
    assert stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600


def test_exit_status_cwd_and_environment_pass_through(vault):
    sub = vault.home / "docs" / "deep"
    sub.mkdir(parents=True)
    result = vault.run(
        "run", "taxes", "--passfile", vault.passfile, "--", "sh", "-c", 'pwd; echo "$MY_VAR"; exit 7',
        cwd=sub, env={"MY_VAR": "kept"},
    )
    assert result.returncode == 7
    assert result.stdout.splitlines() == [str(sub), "kept"]


def test_unknown_command_exits_127(vault):
    vault.open("taxes")
    result = vault.run("run", "taxes", "--", "no-such-command-xyz")
    assert result.returncode == 127
    assert "command not found" in result.stderr


def test_wrong_passphrase_leaves_nothing_behind(vault, tmp_path):
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    result = vault.run("run", "taxes", "--passfile", wrong, "--", "touch", str(vault.mountpoint("taxes") / "x"))
    assert result.returncode == 4
    assert result.stderr.strip() == "nsshell: wrong passphrase"
    assert vault.holder_pids() == []
    assert vault.runtime_files() == []
    assert os.listdir(vault.mountpoint("taxes")) == []  # nothing was written into the bare directory
    assert vault.state("taxes")["state"] == "locked"


def test_a_wrong_passphrase_returns_only_after_the_holder_is_gone_even_if_it_is_slow(vault, tmp_path):
    """A retry right after the error must not meet the failed holder still
    cleaning up (it would remove the retry's runtime files): the client
    returns only once the holder has exited, however late it is scheduled."""
    wrong = tmp_path / "wrong"
    wrong.write_text("not the passphrase\n")
    faults = os.path.join(os.path.dirname(__file__), "..", "faultinject", "nsshell_faults.py")
    env = {"NSSHELL_TEST_FAULTINJECT": os.path.abspath(faults), "NSSHELL_TEST_FAULT": "slow-cleanup"}
    result = vault.run("run", "taxes", "--passfile", wrong, "--", "true", env=env)
    assert result.returncode == 4, result.stderr
    assert result.stderr.strip() == "nsshell: wrong passphrase"
    assert vault.holder_pids() == []
    assert vault.runtime_files() == []
    assert vault.state("taxes")["state"] == "locked"


def test_no_terminal_and_no_passfile_is_a_clear_error(vault):
    result = subprocess.run(
        [vault.exe, "run", "taxes", "--", "true"], env=vault.env, capture_output=True, text=True,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    assert result.returncode == 4
    assert "no terminal to ask for the passphrase" in result.stderr


def test_racing_unlocks_end_with_one_holder(vault):
    mp = vault.mountpoint("taxes")
    results = [None] * 10

    # Under HOME: inside a vault, /tmp is the vault's own (docs/context.md).
    release = vault.home / "release"

    def unlock(i):
        script = f"echo {i} > {mp}/r{i}; while [ ! -e {release} ]; do sleep 0.05; done"
        results[i] = vault.inside("taxes", script, check=False)

    threads = [threading.Thread(target=unlock, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    # All ten join (or fail) before anything is counted.
    vault.wait_until(
        lambda: vault.state("taxes")["sessions"] == 10 or not any(t.is_alive() for t in threads),
        timeout=60, what="ten sessions",
    )
    gocryptfs = [p for p in vault.holder_pids() if psutil.Process(p).name() == "gocryptfs"]
    release.touch()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 10, [r.stderr for r in results]
    assert len(gocryptfs) == 1
    listing = vault.inside("taxes", f"ls {mp}").stdout.split()
    assert sorted(listing) == sorted(f"r{i}" for i in range(10))


def test_lock_refuses_while_sessions_run_unless_forced(vault):
    vault.open("taxes")
    session = subprocess.Popen(
        [vault.exe, "run", "taxes", "--", "sleep", "60"], env=vault.env, stdout=subprocess.DEVNULL
    )
    vault.wait_until(lambda: vault.state("taxes")["sessions"] == 1, what="the session to register")
    ps = json.loads(vault.run("ps", "taxes", "--json", check=True).stdout)
    assert [p["pid"] for p in ps] == [session.pid]
    assert "sleep 60" in ps[0]["command"]
    refused = vault.run("lock", "taxes")
    assert refused.returncode == 6
    assert "1 session" in refused.stderr and "--force" in refused.stderr
    forced = vault.run("lock", "taxes", "--force", check=True)
    assert "locked" in forced.stderr
    assert session.wait(10) == -signal.SIGHUP
    assert vault.state("taxes")["state"] == "locked"
    assert vault.holder_pids() == []


def test_lock_force_lets_a_slow_session_finish_saving_after_sighup(vault):
    """A shell on a loaded machine may need seconds after SIGHUP to write its
    history; losing it is worse than a slower lock.  This session needs 5 s."""
    mp = vault.mountpoint("taxes")
    vault.open("taxes")
    saving = f"trap 'sleep 5; echo saved > {mp}/history; exit 0' HUP; while :; do sleep 0.1; done"
    session = subprocess.Popen([vault.exe, "run", "taxes", "--", "sh", "-c", saving], env=vault.env,
                               stdout=subprocess.DEVNULL)
    vault.wait_until(lambda: vault.state("taxes")["sessions"] == 1, what="the session to register")
    started = time.monotonic()
    forced = vault.run("lock", "taxes", "--force")
    took = time.monotonic() - started
    assert forced.returncode == 0, forced.stderr
    assert session.wait(60) == 0
    assert vault.holder_pids() == []
    assert vault.inside("taxes", f"cat {mp}/history").stdout == "saved\n"
    # A session that exits at once ends the grace at once.
    quick = subprocess.Popen([vault.exe, "run", "taxes", "--passfile", vault.passfile, "--", "sleep", "60"],
                             env=vault.env, stdout=subprocess.DEVNULL)
    vault.wait_until(lambda: vault.state("taxes")["sessions"] == 1, what="the session to register")
    started = time.monotonic()
    vault.run("lock", "taxes", "--force", check=True)
    record("lock-force-grace", slow_session_seconds=round(took, 2),
           quick_session_seconds=round(time.monotonic() - started, 2))
    quick.wait(60)


def test_lock_force_still_finishes_when_a_session_ignores_sighup(vault):
    vault.open("taxes")
    session = subprocess.Popen([vault.exe, "run", "taxes", "--", "sh", "-c", "trap '' HUP; sleep 600"],
                               env=vault.env, stdout=subprocess.DEVNULL)
    vault.wait_until(lambda: vault.state("taxes")["sessions"] == 1, what="the session to register")
    started = time.monotonic()
    forced = vault.run("lock", "taxes", "--force")
    took = time.monotonic() - started
    assert forced.returncode == 0, forced.stderr
    assert session.wait(60) == -signal.SIGKILL
    assert vault.state("taxes")["state"] == "locked"
    assert vault.holder_pids() == []
    record("lock-force-sighup-ignored", seconds=round(took, 2))


def test_vault_stays_open_for_background_processes_of_a_session(vault):
    mp = vault.mountpoint("taxes")
    # The session ends at once but leaves a child that still uses the vault.
    vault.inside("taxes", f"(sleep 1; echo late > {mp}/late.txt) >/dev/null 2>&1 &")
    assert vault.state("taxes")["state"] == "open"
    vault.wait_until(lambda: vault.state("taxes")["state"] == "locked", what="auto-lock after the child ends")
    assert vault.inside("taxes", f"cat {mp}/late.txt").stdout == "late\n"


def test_linger_keeps_the_vault_open_after_the_last_session(vault):
    registry = vault.home / ".config" / "nsshell" / "vaults.toml"
    registry.write_text(registry.read_text().replace("linger = 0", "linger = 2"))
    vault.inside("taxes", "true")
    assert vault.state("taxes")["state"] == "open"
    vault.wait_until(lambda: vault.state("taxes")["state"] == "locked", what="the linger to expire")


def test_enter_starts_a_shell_inside_with_session_variables(vault):
    script = 'echo "v=$NSSHELL_VAULT m=$NSSHELL_MOUNTPOINT h=$NSSHELL_HISTORY"; test "$NSSHELL_SHELL_PID" = "$$" && echo same-pid\n'
    result = vault.run("enter", "taxes", "--passfile", vault.passfile, "--shell", "/bin/sh", input=script)
    assert result.returncode == 0, result.stderr
    mp = vault.mountpoint("taxes")
    assert result.stdout.splitlines() == [f"v=taxes m={mp} h=vault", "same-pid"]


def test_enter_refuses_inside_another_vault(vault):
    vault.create("other")
    result = vault.inside("taxes", f"{vault.exe} enter other --passfile {vault.passfile} --shell /bin/sh", check=False)
    assert result.returncode == 2
    assert "already inside vault 'taxes'" in result.stderr


def test_killed_holder_is_recovered_by_the_next_command(vault):
    mp = vault.mountpoint("taxes")
    vault.open("taxes")
    vault.inside("taxes", f"echo kept > {mp}/k.txt && sync")
    state = json.loads((vault.runtime / "nsshell" / "taxes.state").read_text())
    for role in ("keeper", "supervisor", "backend"):
        os.kill(state[role][0], signal.SIGKILL)
    vault.wait_until(lambda: not any(psutil.pid_exists(state[r][0]) and psutil.Process(state[r][0]).status() != "zombie" for r in ("keeper", "supervisor", "backend")), what="the kill")
    result = vault.inside("taxes", f"cat {mp}/k.txt")
    assert result.stdout == "kept\n"
    vault.wait_until(lambda: vault.holder_pids() == [], what="the new holder to lock after its session")
    assert vault.runtime_files() == []


@pytest.mark.parametrize("victim", ["keeper", "backend", "supervisor"])
def test_each_holder_process_killed_alone_recovers(vault, victim):
    mp = vault.mountpoint("taxes")
    vault.open("taxes")
    vault.inside("taxes", f"echo kept > {mp}/k.txt && sync")
    state = json.loads((vault.runtime / "nsshell" / "taxes.state").read_text())
    os.kill(state[victim][0], signal.SIGKILL)
    time.sleep(0.3)
    assert vault.inside("taxes", f"cat {mp}/k.txt").stdout == "kept\n"
    vault.run("lock", "taxes", check=True)
    vault.wait_until(lambda: vault.holder_pids() == [], what="all holder processes to exit")
    assert vault.runtime_files() == []


def test_stale_record_pointing_at_a_stranger_is_never_signalled(vault):
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        runtime = vault.runtime / "nsshell"
        runtime.mkdir(mode=0o700, exist_ok=True)
        # A crashed holder's record whose pids now belong to someone else
        # (same pid, different start time), and a dead socket file.
        fake = [stranger.pid, 1]
        (runtime / "taxes.state").write_text(json.dumps({"supervisor": fake, "keeper": fake, "backend": fake}))
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.bind(str(runtime / "taxes.sock"))
        s.close()
        assert vault.inside("taxes", "echo ok").stdout == "ok\n"
        assert stranger.poll() is None
    finally:
        stranger.kill()


def test_nonempty_mountpoint_is_refused_and_kept(vault):
    mp = vault.mountpoint("taxes")
    mp.chmod(0o700)  # the bare mountpoint refuses writes (0500): only a deliberate chmod lets a file in
    (mp / "stray.txt").write_text("someone's file")
    result = vault.inside("taxes", "true", check=False)
    assert result.returncode == 7
    assert "not empty" in result.stderr and result.stderr.count("\n") == 1
    assert (mp / "stray.txt").read_text() == "someone's file"
    assert vault.holder_pids() == []


def test_missing_gocryptfs_is_a_clear_error(vault):
    from nsshell.backend import HARDENED_PATH

    result = vault.run("run", "taxes", "--passfile", vault.passfile, "--", "/bin/true", env={"PATH": os.path.dirname(vault.exe)})
    if os.path.exists(HARDENED_PATH):  # the hardened copy is used whatever PATH says
        assert result.returncode == 0, result.stderr
        vault.lock_all()
    else:
        assert result.returncode == 5
        assert "gocryptfs is not installed" in result.stderr
    result = vault.run("run", "taxes", "--passfile", vault.passfile, "--", "true", env={"NSSHELL_GOCRYPTFS": "/nowhere/gocryptfs"})
    assert result.returncode == 5
    assert "NSSHELL_GOCRYPTFS=/nowhere/gocryptfs is not an executable file" in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["../x", "a/b", "", "-rf", "new\nline", "x" * 65, "two words"])
def test_bad_names_are_refused_everywhere(world, name):
    for args in (["create", name, "--passfile", world.passfile], ["run", name, "--", "true"], ["open", name]):
        result = world.run(*args)
        assert result.returncode in (2, 3), (args, result)
        assert result.stderr.count("\n") == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert world.run("list", "--json", check=True).stdout.strip() == "[]"


def test_create_refuses_mountpoint_inside_cipher_dir(world):
    cipher = world.home / "c"
    result = world.run("create", "t", "--passfile", world.passfile, "--cipher-dir", cipher, "--mountpoint", cipher / "m")
    assert result.returncode == 2
    assert "inside each other" in result.stderr
    assert not cipher.exists()
    assert world.run("list", "--json", check=True).stdout.strip() == "[]"


def test_create_twice_keeps_the_first(vault):
    conf = (vault.cipher_dir("taxes") / "gocryptfs.conf").read_bytes()
    result = vault.run("create", "taxes", "--passfile", vault.passfile)
    assert result.returncode == 7
    assert (vault.cipher_dir("taxes") / "gocryptfs.conf").read_bytes() == conf


def test_unknown_vault(world):
    result = world.run("run", "nope", "--", "true")
    assert result.returncode == 3
    assert result.stderr.startswith("nsshell: no vault named 'nope'")


def test_remove_refuses_while_open_and_purge_deletes(vault):
    vault.open("taxes")
    assert vault.run("remove", "taxes").returncode == 6
    vault.run("lock", "taxes", check=True)
    vault.run("remove", "taxes", check=True)
    assert vault.cipher_dir("taxes").is_dir()  # ciphertext kept unless --purge
    vault.run("create", "again", "--passfile", vault.passfile, check=True)
    vault.run("remove", "again", "--purge", "--yes", check=True)
    assert not vault.cipher_dir("again").exists()


def test_lock_all_and_open_twice(vault):
    vault.create("medical")
    vault.open("taxes")
    vault.open("medical")
    again = vault.run("open", "taxes", "--passfile", vault.passfile, check=True)
    assert "already open" in again.stderr
    assert {vault.state(n)["state"] for n in ("taxes", "medical")} == {"open"}
    vault.run("lock", "--all", check=True)
    assert {vault.state(n)["state"] for n in ("taxes", "medical")} == {"locked"}
    vault.wait_until(lambda: vault.holder_pids() == [], what="holders to exit")


def test_doctor_reports_this_machine(world):
    result = world.run("doctor", "--json")
    checks = {c["title"]: c for c in json.loads(result.stdout)}
    # gocryptfs before 2.4 (Debian 12's 2.3) works, with a warning about #724.
    assert checks["gocryptfs"]["status"] == "ok" or "#724" in checks["gocryptfs"]["detail"]
    assert checks["user namespaces + FUSE"]["status"] == "ok"
    assert result.returncode == 0


def test_runtime_dir_longer_than_a_socket_path_allows(vault):
    # sun_path holds 108 bytes; XDG_RUNTIME_DIR can be longer than that.
    deep = vault.root / ("x" * 60) / ("y" * 60)
    deep.mkdir(parents=True, mode=0o700)
    env = {"XDG_RUNTIME_DIR": str(deep)}
    assert len(str(deep / "nsshell" / "taxes.sock")) > 108
    vault.run("open", "taxes", "--passfile", vault.passfile, env=env, check=True)
    mp = vault.mountpoint("taxes")
    result = vault.run("run", "taxes", "--", "sh", "-c", f"echo deep > {mp}/d; cat {mp}/d", env=env, check=True)
    assert result.stdout == "deep\n"
    vault.run("lock", "taxes", env=env, check=True)


def test_disabled_user_namespaces_give_a_clear_error_and_nothing_behind(vault):
    faults = os.path.join(os.path.dirname(__file__), "..", "faultinject", "nsshell_faults.py")
    env = {"NSSHELL_TEST_FAULTINJECT": os.path.abspath(faults), "NSSHELL_TEST_FAULT": "userns-off"}
    result = vault.run("run", "taxes", "--passfile", vault.passfile, "--", "touch", "x", env=env)
    assert result.returncode == 5
    assert "cannot create a user namespace" in result.stderr and "nsshell doctor" in result.stderr
    assert result.stderr.count("\n") == 1
    vault.wait_until(lambda: vault.holder_pids() == [], what="the failed holder to exit")
    assert vault.runtime_files() == []
    assert os.listdir(vault.mountpoint("taxes")) == []


def test_extpass_program_supplies_the_passphrase(vault):
    mp = vault.mountpoint("taxes")
    result = vault.run("run", "taxes", "--extpass", f"cat {vault.passfile}", "--", "sh", "-c", f"echo ok > {mp}/e; cat {mp}/e")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"
