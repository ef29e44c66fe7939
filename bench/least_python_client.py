"""The least a Python client can do to run a command in an open vault: a
yardstick for `nsshell run`, not a client anyone should use.

One file, started with -S, importing nothing but the interpreter's built-in
modules: connect to the keeper, JOIN, receive the namespace fds, setns,
chdir, a few environment variables, exec.  It checks nothing (not the
runtime directory's owner, not the reply, not the name), handles no
error, and sets only part of the environment nsshell sets.  What
`nsshell run` costs above this row is the price of being a real program:
its modules, its checks, and its environment (docs/benchmarks.md).

    python -S least_python_client.py NAME -- COMMAND [ARG...]
"""

import _ctypes
import _socket
import posix
import sys

CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000

name, command = sys.argv[1], sys.argv[3:]
environ = posix.environ
keeper = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
keeper.connect(environ[b"XDG_RUNTIME_DIR"] + b"/nsshell/" + name.encode() + b".sock")
keeper.sendall(b"JOIN\n")
reply, ancillary, _, _ = keeper.recvmsg(4096, _socket.CMSG_SPACE(3 * 4))
fds = [int.from_bytes(data[i : i + 4], sys.byteorder) for _, _, data in ancillary for i in range(0, len(data), 4)]
history, _, mountpoint = reply.decode().rstrip("\n")[3:].partition(" ")
if mountpoint.startswith("bus="):
    mountpoint = mountpoint.partition(" ")[2]
cwd = posix.getcwd()
setns = _ctypes.dlsym(_ctypes.dlopen(None, posix.RTLD_NOW), "setns")
_ctypes.call_function(setns, (fds[0], CLONE_NEWUSER))
_ctypes.call_function(setns, (fds[1], CLONE_NEWNS))
try:
    posix.chdir(cwd)
except OSError:
    posix.chdir(mountpoint)
env = dict(environ)
env.update({b"NSSHELL_VAULT": name.encode(), b"NSSHELL_MOUNTPOINT": mountpoint.encode(),
            b"NSSHELL_HISTORY": history.encode()})
for directory in env.get(b"PATH", b"/usr/bin:/bin").split(b":"):
    try:
        posix.execve(directory + b"/" + command[0].encode(), command, env)
    except OSError:
        pass
sys.exit(127)
