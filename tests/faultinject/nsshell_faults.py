"""Fault injection for the holder, active only when NSSHELL_TEST_FAULT is set.

Tests name this file in NSSHELL_TEST_FAULTINJECT; the client then has the
holder (which starts isolated, python -I -S: no sitecustomize, no
PYTHONPATH) run it before it starts (nsshell.unlock.holder_command_line).
Beyond that one hook nsshell knows nothing about it: it replaces kernel
functions from the outside.

  fuse-denied  /dev/fuse cannot be opened (EACCES), as on machines without udev
  mount-fails  mount(2) of the FUSE fd fails (EINVAL), as with an fd from the wrong namespace
  mount-noop   mount(2) "succeeds" but mounts nothing: the case NAMESPACE-FACTS 5 warns about
  userns-off   unshare(2) fails with ENOSPC, as when user.max_user_namespaces=0
               (the libc call is replaced, so nsshell's own error handling runs)
  keeper-bug   the keeper's STATUS answer raises RuntimeError: a bug nobody
               expected, in the middle of the serving loop
  slow-cleanup the holder takes 2 s longer to remove its runtime files, as on a
               loaded machine where it is not scheduled for a while
"""

import os

_fault = os.environ.get("NSSHELL_TEST_FAULT", "")

if _fault:
    from nsshell import kernel

    if _fault == "fuse-denied":

        def open_fuse_device():
            raise kernel.KernelError(13, "/dev/fuse is not accessible (injected fault)")

        kernel.open_fuse_device = open_fuse_device
    elif _fault == "mount-fails":

        def mount_fuse(*args, **kwargs):
            raise kernel.KernelError(22, "cannot mount FUSE (injected fault: Invalid argument)")

        kernel.mount_fuse = mount_fuse
    elif _fault == "userns-off":
        import errno

        real_libc_call = kernel._libc_call

        def libc_call(name, *args):
            if name == "unshare":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_libc_call(name, *args)

        kernel._libc_call = libc_call
        if hasattr(os, "unshare"):
            os.unshare = lambda flags: libc_call("unshare", flags)
    elif _fault == "mount-noop":

        def mount_fuse(*args, **kwargs):
            return None

        kernel.mount_fuse = mount_fuse
    elif _fault == "keeper-bug":
        from nsshell import holder

        def open_fd_count():
            raise RuntimeError("injected keeper bug")

        holder._open_fd_count = open_fd_count
    elif _fault == "slow-cleanup":
        import time

        from nsshell import holder

        real_cleanup = holder.cleanup_runtime_files

        def cleanup_runtime_files(*args, **kwargs):
            time.sleep(2)
            return real_cleanup(*args, **kwargs)

        holder.cleanup_runtime_files = cleanup_runtime_files
