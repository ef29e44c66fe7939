"""hide, offline and the X11 socket with a private /tmp (issue 9), each
seen from inside the vault and from outside."""

import os
import secrets
import socket
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.namespaces


def _registry_append(world, text):
    registry = world.home / ".config" / "nsshell" / "vaults.toml"
    registry.write_text(registry.read_text() + text)


def test_hide_covers_host_paths_inside_only(vault):
    world = vault
    ssh = world.home / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text("PRIVATE KEY\n")
    (world.home / ".netrc").write_text("machine x password hunter2\n")
    aws = world.home / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text("aws_secret=abc\n")
    _registry_append(world, 'hide = ["~/.ssh", "~/.netrc"]\n')

    out = world.inside(
        "taxes",
        'ls -A ~/.ssh | wc -l; cat ~/.netrc | wc -c; touch ~/.ssh/new 2>&1 || echo refused; '
        'echo x > ~/.netrc 2>&1 || echo refused-file; cat ~/.aws/credentials',
    ).stdout.split("\n")
    assert out[0] == "0" and out[1] == "0", out  # empty
    assert "refused" in out and "refused-file" in out, out  # and read-only
    assert "aws_secret=abc" in out  # not hidden: not in the list
    # Outside, everything is as it was.
    assert (ssh / "id_ed25519").read_text() == "PRIVATE KEY\n"
    assert (world.home / ".netrc").read_text() == "machine x password hunter2\n"
    assert not (ssh / "new").exists()
    # status says what is hidden.
    world.open("taxes")
    status = world.run("status", "taxes", check=True).stdout
    assert "hidden:     ~/.ssh, ~/.netrc" in status, status

    # Per run: --hide covers a path for that command only.
    hidden = world.run("run", "taxes", "--hide", "~/.aws", "--", "sh", "-c", "ls -A ~/.aws | wc -l")
    assert hidden.returncode == 0 and hidden.stdout.strip() == "0", hidden
    plain = world.run("run", "taxes", "--", "cat", str(aws / "credentials"), check=True)
    assert "aws_secret=abc" in plain.stdout
    bad = world.run("run", "taxes", "--hide", "relative/path", "--", "true")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "must be absolute" in bad.stderr, bad


SERVE = textwrap.dedent(
    """
    import socket, sys
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(5)
    print(s.getsockname()[1], flush=True)
    while True:
        c, _ = s.accept()
        c.sendall(b"hello-from-" + sys.argv[1].encode())
        c.close()
    """
)

CONNECT = "import socket,sys; c=socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5); print(c.recv(64).decode())"

LOOPBACK_INSIDE = textwrap.dedent(
    """
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
    c = socket.create_connection(s.getsockname(), timeout=5); a, _ = s.accept(); a.sendall(b"loop-ok")
    print(c.recv(16).decode())
    """
)


def test_offline_vault_has_only_its_own_loopback(vault):
    world = vault
    _registry_append(world, "offline = true\n")
    host_server = subprocess.Popen([sys.executable, "-c", SERVE, "host"], stdout=subprocess.PIPE, text=True)
    inner_server = None
    try:
        port = int(host_server.stdout.readline())
        # From the host, the host server answers.
        assert subprocess.run([sys.executable, "-c", CONNECT, str(port)], capture_output=True, text=True).stdout.strip() == "hello-from-host"
        # From inside, it cannot be reached; loopback inside works.
        reach = world.inside("taxes", f"{sys.executable} -c \"{CONNECT}\" {port}", check=False)
        assert reach.returncode != 0 and "hello-from-host" not in reach.stdout, reach
        assert "Connection refused" in reach.stderr, reach.stderr
        loop = world.inside("taxes", f"{sys.executable} -c '{LOOPBACK_INSIDE}'")
        assert loop.stdout.strip() == "loop-ok", loop
        # A server inside cannot be reached from the host.
        world.open("taxes")
        inner_server = subprocess.Popen(
            [world.exe, "run", "taxes", "--", sys.executable, "-c", SERVE, "vault"],
            stdout=subprocess.PIPE, text=True, env=world.env,
        )
        inner_port = int(inner_server.stdout.readline())
        outside = subprocess.run([sys.executable, "-c", CONNECT, str(inner_port)], capture_output=True, text=True)
        assert outside.returncode != 0 and "hello-from-vault" not in outside.stdout, outside
        # ... while a second session joins the same network namespace and reaches it.
        again = world.inside("taxes", f"{sys.executable} -c \"{CONNECT}\" {inner_port}")
        assert again.stdout.strip() == "hello-from-vault", again
        status = world.run("status", "taxes", check=True).stdout
        assert "network:    offline" in status, status
    finally:
        host_server.kill()
        host_server.wait()
        if inner_server is not None:
            inner_server.kill()
            inner_server.wait()


def test_x11_socket_reachable_with_private_tmp(vault):
    """/tmp/.X11-unix is let through; the rest of /tmp is the vault's own."""
    world = vault
    x11 = "/tmp/.X11-unix"
    created = False
    if not os.path.isdir(x11):
        try:
            os.mkdir(x11)  # as an X server would; /tmp is sticky and world-writable
            os.chmod(x11, 0o1777)
            created = True
        except OSError as exc:
            pytest.fail(f"cannot create {x11} to stand in for an X server: {exc}")
    display = f"{x11}/X{os.getpid() % 50000 + 10000}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(display)
    server.listen(1)
    marker = world.root / "host-tmp-marker"
    try:
        out = world.inside(
            "taxes",
            f"{sys.executable} -c \"import socket; socket.socket(socket.AF_UNIX).connect('{display}'); print('x11-ok')\"; "
            f"ls {marker} 2>&1 || echo host-tmp-hidden; echo private > /tmp/written-inside; cat /tmp/written-inside",
        ).stdout
        assert "x11-ok" in out, out
        assert "private" in out
        server.settimeout(10)
        conn, _ = server.accept()  # the connection really arrived at the host's socket
        conn.close()
    finally:
        server.close()
        os.unlink(display)
        if created:
            try:
                os.rmdir(x11)  # leave the machine as it was (unless something else uses it now)
            except OSError:
                pass
    assert not os.path.exists("/tmp/written-inside") or open("/tmp/written-inside").read() != "private\n"


def test_private_tmp_gone_at_lock_unless_kept_in_the_vault(vault):
    """Default: both gone at lock.  keep_tmp: kept in the vault, except a
    directory that holds the mountpoint (here /tmp, as the test HOME is
    there), which stays a tmpfs, and status says which is which."""
    world = vault
    token = secrets.token_hex(4)  # unique per run: this machine's /tmp is shared
    tmp_canary, var_canary = f"tmp{token}cnry", f"var{token}cnry"
    world.create("kept")
    _registry_append(world, "keep_tmp = true\n")  # the last table: vault "taxes" (sorted after "kept")
    for name in ("kept", "taxes"):
        world.inside(name, f"echo {tmp_canary} > /tmp/note; echo {var_canary} > /var/tmp/note")
        world.run("lock", name, check=True)
        out = world.inside(name, "cat /tmp/note /var/tmp/note 2>&1; true").stdout
        assert tmp_canary not in out, out  # /tmp: a tmpfs for both
        if name == "taxes":
            assert var_canary in out, out  # keep_tmp: /var/tmp in the ciphertext, across locks
        else:
            assert var_canary not in out, out
    from .scan import scan

    assert scan([world.root, "/tmp", "/var/tmp"], [tmp_canary, var_canary]) == []
    world.open("taxes")
    status = world.run("status", "taxes", check=True).stdout
    assert "private:    /tmp (tmpfs, gone at lock)" in status, status
    assert "private:    /var/tmp (kept in the vault)" in status, status
    world.open("kept")
    status = world.run("status", "kept", check=True).stdout
    assert "private:    /var/tmp (tmpfs, gone at lock)" in status and "shadowed:" in status, status


def test_hidden_file_replaced_on_the_host_stays_hidden(vault):
    """A rename onto a hidden file on the host detaches its cover inside
    (the kernel drops mounts on a dentry that goes away); the keeper puts it
    back, so a session never reads the host's new file."""
    world = vault
    netrc = world.home / ".netrc"
    netrc.write_text("machine x password old\n")
    _registry_append(world, 'hide = ["~/.netrc"]\n')
    world.open("taxes")
    assert world.inside("taxes", "cat ~/.netrc | wc -c").stdout.strip() == "0"
    new = world.home / ".netrc.new"
    new.write_text("machine x password hunter3\n")
    os.replace(new, netrc)  # how editors save
    world.wait_until(lambda: world.inside("taxes", "cat ~/.netrc | wc -c").stdout.strip() == "0",
                     timeout=60, what="the hidden file to be covered again")
    assert "hunter3" not in world.inside("taxes", "cat ~/.netrc; true").stdout
    assert netrc.read_text() == "machine x password hunter3\n"  # outside: the user's new file
