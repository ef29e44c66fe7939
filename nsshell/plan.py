"""The vault's namespace as a plan: an ordered list of named set-up steps.

build() turns a vault's settings into the list; carry_out() runs it in the
keeper, step by step, with nsshell.kernel's small named calls.  The model is
bubblewrap's set-up operations: each step is a small record (kind, dest,
source, what to keep), one executor runs them in order, a later step may
cover an earlier one, "missing on the host" is a normal outcome and not an
error, and any other failure aborts the whole set-up (the keeper then
exits and its namespace is thrown away: there is nothing to roll back).

The steps, in the order build() puts them:

  offline      own network namespace with only loopback (offline = true)
  private tmp  a tmpfs on /tmp and on /var/tmp, with what must stay
               reachable bound back (the X11 socket directory, and HOME,
               the mountpoint and nsshell's runtime directory when they
               live there); with keep_tmp = true a directory in the vault
               instead, which needs the vault, so it comes after "verify"
  mount vault  the keeper's own FUSE mount (nsshell.holder)
  verify       the keeper's own check that the vault is there
  shadow       a file or directory under HOME covered by the vault's copy in
               <mountpoint>/.nsshell/home/, so tool state written there
               stays in the vault (bind mount; see docs/context.md for paths
               the host does not have)
  host view    the host's dconf directory, read-only, at a path of its own
               in nsshell's runtime directory, before "shadow" covers it;
               and the vault's dconf profile, which reads the host's
               settings there and writes the vault's own (docs/gui.md)
  hide         an empty read-only layer over a host path (also over the
               host's session bus sockets, unless dbus = "host")
  private bus  a 0700 tmpfs over the vault's bus directory, for its own
               session bus (dbus = "vault"; nsshell.sessionbus)
  private dir  a 0700 tmpfs over a directory of the host's runtime directory
               where a service of the vault's bus puts a socket: at-spi's

Only the keeper runs this, once per unlock: sessions join the finished
namespace, so none of it costs `nsshell run` anything.
"""

import errno
import os
import stat
import sys
import time

from nsshell import kernel, paths, sessionbus
from nsshell.stateenv import DCONF_PROFILE_NAME, TOOL_STATE_ENV, shadow_home

# What programs of a Debian desktop and developer install write under HOME
# that tells what was done (histories, recent files, thumbnails, allowed
# .envrc paths).  A trailing "/" marks a directory.  Shell histories are not
# here: nsshell's shell integration keeps them in the vault already.
DEFAULT_PRIVATE = (
    "~/.viminfo",  # vim: registers (yanks), search patterns, file marks
    "~/.vim/.netrwhist",  # vim's netrw: directories browsed
    "~/.local/state/nvim/",  # neovim: shada (the same as viminfo), logs
    "~/.lesshst",  # less: search strings
    "~/.python_history",  # python3 REPL
    "~/.ipython/profile_default/history.sqlite",  # IPython
    "~/.sqlite_history",  # sqlite3 shell
    "~/.psql_history",  # PostgreSQL's psql
    "~/.mysql_history",  # MariaDB/MySQL client
    "~/.rediscli_history",  # redis-cli
    "~/.node_repl_history",  # node REPL
    "~/.gdb_history",  # gdb (with 'set history save on')
    "~/.irb_history",  # ruby's irb
    "~/.octave_hist",  # GNU Octave
    "~/.wget-hsts",  # wget: every HTTPS host fetched
    "~/.local/share/nano/",  # nano: search history, file positions
    "~/.local/share/mc/",  # midnight commander: command history, file positions
    "~/.local/share/direnv/",  # direnv: allow/deny records name each .envrc
    "~/.local/share/recently-used.xbel",  # GTK: recently used files
    "~/.local/share/gvfs-metadata/",  # GNOME file metadata (names of files opened)
    "~/.cache/thumbnails/",  # freedesktop thumbnails: pictures of the files themselves
    "~/.local/share/zathura/",  # zathura: history of opened documents
    "~/.local/share/evince/",  # evince: last page and settings per document
    "~/.local/share/okular/",  # okular: per-document data
    "~/.config/dconf/",  # dconf's user database: GSettings of every GTK program (paths of files opened)
)

# dconf keeps every GTK program's settings in one database that its client
# library reads and dconf-service writes, both at ~/.config/dconf/user.
# Shadowed, the vault has its own database; the host's stays readable
# through a "host view" and a dconf profile that stacks the two.
DCONF_DIR = "~/.config/dconf/"
DCONF_SYSTEM_PROFILE = "/etc/dconf/profile/user"

# Where a private /tmp must still let things through.  X11's socket
# directory, so GUI programs keep working (firejail and systemd do this too).
TMP_PASSTHROUGH = ("/tmp/.X11-unix",)


class Step:
    """One set-up step: kind (see the module docstring), dest (the path in
    the namespace it acts on), source (where the content comes from, if any),
    keep (paths under dest bound back after it is covered)."""

    __slots__ = ("kind", "dest", "source", "keep")

    def __init__(self, kind, dest=None, source=None, keep=()):
        self.kind = kind
        self.dest = dest
        self.source = source
        self.keep = tuple(keep)

    def __repr__(self):
        extra = "".join(f", {f}={getattr(self, f)!r}" for f in ("source", "keep") if getattr(self, f))
        return f"Step({self.kind!r}, {self.dest!r}{extra})"


def expand(path, home):
    """~/x -> HOME/x; anything else must already be absolute."""
    if path == "~" or path.startswith("~/"):
        return os.path.join(home, path[2:]).rstrip("/") if path != "~" else home
    return path.rstrip("/") or "/"


def _outermost(candidates):
    """candidates minus any that lie under another one of them."""
    ordered = sorted(set(candidates), key=len)
    kept = []
    for path in ordered:
        if not any(paths.is_under(path, other) for other in kept):
            kept.append(path)
    return kept


def build(spec):
    """The ordered steps for a vault's namespace, from the holder's spec."""
    home = spec.get("home") or "/nonexistent"
    mountpoint = spec["mountpoint"]
    steps = []
    if spec.get("offline"):
        steps.append(Step("offline"))
    kept_tmp_steps = []
    if spec.get("private_tmp", True):
        wanted = [*TMP_PASSTHROUGH, home, mountpoint, spec.get("runtime_dir") or ""]
        if spec.get("xauthority"):
            wanted.append(spec["xauthority"])
        for directory, name in (("/tmp", "tmp"), ("/var/tmp", "var-tmp")):
            keep = _outermost(p for p in wanted if p and p != directory and paths.is_under(p, directory))
            # keep_tmp needs the vault, so it comes after "verify"; but when
            # the mountpoint itself lies below that directory, binding it
            # back then would copy the vault's mount (a second mount, which
            # the keeper rightly takes for a cover): a tmpfs before the
            # mount it is, and status says so.
            if spec.get("keep_tmp", False) and not paths.is_under(mountpoint, directory):
                kept_tmp_steps.append(Step("private tmp", directory, os.path.join(mountpoint, ".nsshell", name), keep))
            else:
                steps.append(Step("private tmp", directory, None, keep))
    steps += [Step("mount vault", mountpoint), Step("verify", mountpoint)]
    steps += kept_tmp_steps
    shadow_root = shadow_home(mountpoint)
    for entry in dict.fromkeys([*DEFAULT_PRIVATE, *spec.get("private", ())]):
        dest = expand(entry, home)
        if not paths.is_under(dest, home) or dest == home:
            continue  # the registry refuses these; a spec from elsewhere is not trusted further
        source = os.path.join(shadow_root, os.path.relpath(dest, home))
        if entry == DCONF_DIR:
            view = paths.dconf_host_view(spec["name"], spec.get("runtime_dir"))
            steps.append(Step("host view", view, dest))
            steps.append(Step("dconf profile", os.path.join(mountpoint, ".nsshell", DCONF_PROFILE_NAME), view))
        steps.append(Step("shadow", dest, source + ("/" if entry.endswith("/") else "")))
    for entry in spec.get("hide", ()):
        steps.append(Step("hide", expand(entry, home)))
    bus = spec.get("dbus", "host")  # the holder's spec always says; "host" is what nsshell did before
    if bus != "host":
        # Programs inside must not reach the host's bus (GUI-FACTS 1-4): its
        # socket files are covered.  An abstract-socket bus cannot be
        # covered; only offline = true cuts it (docs/gui.md).
        for path in spec.get("host_bus_sockets", ()):
            steps.append(Step("hide", path))
    if bus == "vault":
        steps.append(Step("private bus", paths.bus_dir(spec["name"], spec.get("runtime_dir"))))
        # The vault's bus activates GTK's accessibility bus (org.a11y.Bus),
        # which puts its socket in $XDG_RUNTIME_DIR/at-spi: shared with the
        # host, where any program outside could connect and read the text of
        # the windows inside through it.  A tmpfs of this namespace holds it.
        runtime = spec.get("xdg_runtime_dir")
        if runtime and os.path.isabs(runtime):
            steps.append(Step("private dir", os.path.join(runtime, "at-spi")))
    return steps


# --- carrying it out (in the keeper, inside its fresh namespace) -------------------------


class Outcome:
    """What each step did, for `nsshell status`: a list of [kind, dest, how]."""

    def __init__(self):
        self.rows = []
        self.bound = []  # [step, (st_dev, st_ino) seen at dest once covered]: restore_shadows
        self.empty_fd = None  # an O_PATH handle on the empty file hidden files are covered with

    def add(self, step, how):
        self.rows.append([step.kind, step.dest, how])
        if (step.kind == "shadow" and how.startswith("bind")) or (step.kind == "hide" and how == "hidden"):
            info = os.stat(step.dest)
            self.bound.append([step, (info.st_dev, info.st_ino)])


def carry_out(steps, outcome, phase):
    """Run the steps of one phase: "before mount" (up to "mount vault") or
    "after mount" (after "verify").  The keeper does those two itself."""
    kinds = [s.kind for s in steps]
    cut = kinds.index("mount vault")
    chosen = steps[:cut] if phase == "before mount" else steps[kinds.index("verify") + 1 :]
    mountpoint = steps[cut].dest
    empty = EmptyFile(mountpoint)
    try:
        for step in chosen:
            if step.kind in ("shadow", "hide") and (paths.is_under(mountpoint, step.dest) or paths.is_under(step.dest, mountpoint)):
                # Covering the vault (or a path inside it) would hide the vault itself.
                outcome.add(step, "not done: it holds the vault's mountpoint")
            elif step.kind == "hide":
                outcome.add(step, _hide(step, empty))
            else:
                outcome.add(step, _EXECUTORS[step.kind](step))
        if empty.path is not None and outcome.empty_fd is None:
            outcome.empty_fd = kernel.open_path(empty.path)  # kept: restore_shadows may need it again
    finally:
        empty.release()


def _offline(step):
    kernel.unshare_network()
    kernel.bring_up_loopback()
    return "loopback only"


def _private_tmp(step):
    if not os.path.isdir(step.dest):
        return "missing on host"
    # Hold what must stay reachable before covering it (firejail's way).
    kept = []
    try:
        for path in step.keep:
            try:
                kept.append((path, kernel.open_path(path), os.stat(path)))
            except FileNotFoundError:
                continue
        if step.source:
            _make_dir(step.source, 0o700)
            kernel.bind_mount(step.source, step.dest)
            how = "kept in the vault"
        else:
            kernel.mount_tmpfs(step.dest, mode=0o1777)
            how = "tmpfs, gone at lock"
        for path, fd, info in kept:
            _make_mount_target(path, stat.S_ISDIR(info.st_mode))
            kernel.bind_mount(f"/proc/self/fd/{fd}", path)
    finally:
        for _, fd, _ in kept:
            os.close(fd)
    return how


def _shadow(step):
    source = step.source.rstrip("/")
    want_dir = step.source.endswith("/")
    try:
        host = os.stat(step.dest)
    except FileNotFoundError:
        host = None
    except OSError as exc:
        return f"not shadowed: {exc.strerror}"
    is_dir = stat.S_ISDIR(host.st_mode) if host else want_dir
    # The vault's copy exists from the first unlock on, so a program pointed
    # at it by an environment variable finds its directory.  Looked up
    # first: from the second unlock on it is there, and one lstat costs
    # gocryptfs less than the mkdir and open(O_CREAT) that would find it.
    try:
        copy = os.lstat(source)
    except FileNotFoundError:
        copy = None
    replaced = ""
    if copy is not None and stat.S_ISLNK(copy.st_mode):
        # Only something inside the vault can have put it there.  Bound, it
        # would be followed: to a host file, where the state would leak, or
        # to nothing, and then no unlock could ever succeed (ELOOP).  It is
        # the vault's own copy of a tool's state: an empty one replaces it.
        target = os.readlink(source)
        os.unlink(source)
        replaced = f" (the vault's copy was a symbolic link to {target}: replaced by an empty one)"
        copy = None
    if copy is None:
        if is_dir:
            _make_dir(source, 0o700)
        else:
            _make_dir(os.path.dirname(source), 0o700)
            os.close(os.open(source, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
        copy = os.stat(source)
    if host is None:
        variable = _env_for(step.dest)
        return f"environment {variable}" if variable else "missing on host: not shadowed"
    if stat.S_ISDIR(copy.st_mode) != is_dir:
        return "not shadowed: the vault's copy is of another type"
    kernel.bind_mount(source, step.dest)
    return (PLACEHOLDER_HOW if step.dest in _placeholders_made else "bind") + replaced


# --- placeholders: paths in the list that the host lacks ---------------------------------
#
# A bind mount needs a path to cover.  Where the host lacks one that no
# environment variable reaches (~/.irb_history, ~/.wget-hsts, direnv's
# directory...), the supervisor creates an empty one on the host -- a 0600
# file or a 0700 directory, and any missing parent directory -- before the
# keeper exists, so before any session runs; the keeper then binds the
# vault's copy over it as over any other.  When the vault locks the
# supervisor removes what it made, but only what is still exactly that:
# the same inode, still empty.  A program outside that wrote to the
# placeholder, or replaced it, made it the user's own file, which stays.
#
# Each placeholder carries an extended attribute naming the vault, so one
# left behind by a holder that was killed (no lock ran) is recognised, and
# removed, at the next lock of that vault.  Where the file system has no
# user xattrs, only the holder's memory knows them.

PLACEHOLDER_XATTR = "user.nsshell.placeholder"
PLACEHOLDER_HOW = "bind over an empty placeholder made on the host until lock"
_placeholders_made = set()  # leaf paths; filled in the supervisor before it forks the keeper


class Placeholder:
    """One path the supervisor made (or adopted from a killed holder)."""

    __slots__ = ("path", "is_dir", "identity", "mark")

    def __init__(self, path, is_dir, identity, mark=None):
        self.path = path
        self.is_dir = is_dir
        self.identity = identity  # (st_dev, st_ino)
        # PLACEHOLDER_XATTR's value on it, None where the filesystem has no
        # user xattrs.  The inode number alone is not enough: a file made at
        # the path after ours was removed often gets the same number back.
        self.mark = mark

    def __repr__(self):
        return f"Placeholder({self.path!r}, is_dir={self.is_dir})"


def make_placeholders(steps, vault_name, home):
    """Run by the supervisor, outside the vault's namespace, before the
    keeper is forked.  Returns the Placeholder list in the order made
    (parents first); remove_placeholders() takes it back.  A path that
    cannot be made is left to the keeper, which reports it as missing."""
    made = []
    mountpoint = next(s.dest for s in steps if s.kind == "mount vault")
    for step in steps:
        if step.kind != "shadow" or _env_for(step.dest) is not None:
            continue
        dest = step.dest
        if paths.is_under(mountpoint, dest) or paths.is_under(dest, mountpoint) or "\n" in dest:
            continue
        try:
            _make_placeholder(dest, step.source.endswith("/"), vault_name, home, made)
        except OSError as exc:
            sys.stderr.write(f"nsshell-holder: cannot make a placeholder at {dest} ({exc.strerror}); not shadowed\n")
    _placeholders_made.update(p.path for p in made)
    return made


def _make_placeholder(dest, is_dir, vault_name, home, made):
    # Parents first, from HOME down: each one that does not exist yet is
    # ours, and so is one we left behind before (a killed holder).
    chain = []
    parent = os.path.dirname(dest)
    while parent != home and paths.is_under(parent, home):
        if os.path.lexists(parent) and _our_leftover(parent, True, vault_name) is None:
            break
        chain.append(parent)
        parent = os.path.dirname(parent)
    for path, path_is_dir in [*((d, True) for d in reversed(chain)), (dest, is_dir)]:
        if all(p.path != path for p in made):
            _made_or_adopted(path, path_is_dir, vault_name, made)


def _made_or_adopted(path, is_dir, vault_name, made):
    """Create path exclusively (O_EXCL, mkdir): if something is there
    already, it is the user's, unless it is an empty leftover of ours."""
    try:
        if is_dir:
            os.mkdir(path, 0o700)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        leftover = _our_leftover(path, is_dir, vault_name)
        if leftover is not None:
            made.append(leftover)
        return
    mark = vault_name.encode()
    try:
        info = os.fstat(fd)
        try:
            os.setxattr(fd, PLACEHOLDER_XATTR, mark)
        except OSError:
            mark = None  # no user xattrs here: only this holder knows it made the path
    finally:
        os.close(fd)
    made.append(Placeholder(path, is_dir, (info.st_dev, info.st_ino), mark))


def _our_leftover(path, is_dir, vault_name):
    try:
        info = os.lstat(path)
        if stat.S_ISDIR(info.st_mode) != is_dir or not (is_dir or stat.S_ISREG(info.st_mode)) or (
            not is_dir and info.st_size != 0
        ):
            return None
        if os.getxattr(path, PLACEHOLDER_XATTR, follow_symlinks=False) != vault_name.encode():
            return None
    except OSError:
        return None
    return Placeholder(path, is_dir, (info.st_dev, info.st_ino), vault_name.encode())


def remove_placeholders(made):
    """At lock, outside: remove each placeholder that is still exactly what
    was made (same inode; a file still empty, a directory still empty),
    deepest first.  Never anything else: a file a program outside wrote to
    or put in its place, a directory it filled, all stay."""
    for placeholder in reversed(made):
        try:
            _remove_placeholder(placeholder)
        except OSError as exc:
            sys.stderr.write(f"nsshell-holder: left the placeholder {placeholder.path} ({exc.strerror})\n")


def _same(path, placeholder):
    info = os.lstat(path)
    if (info.st_dev, info.st_ino) != placeholder.identity or not (placeholder.is_dir or info.st_size == 0):
        return False
    if placeholder.mark is None:
        return True
    try:
        return os.getxattr(path, PLACEHOLDER_XATTR, follow_symlinks=False) == placeholder.mark
    except OSError:
        return False  # no mark: a new file that got our inode's number back


def _remove_placeholder(placeholder):
    path = placeholder.path
    try:
        if not _same(path, placeholder):
            return
    except FileNotFoundError:
        return
    if placeholder.is_dir:
        try:
            os.rmdir(path)  # only if empty: the kernel checks, at the moment of removal
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                raise
        return
    # Move it aside first: if a program outside puts its own file at the path
    # between our check and the removal, the rename takes that file, the
    # check below sees it is not ours, and it goes back.
    aside = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.nsshell-{os.getpid()}")
    os.rename(path, aside)
    if _same(aside, placeholder):
        os.unlink(aside)
        return
    # Not ours: back where it was, unless something new is there by now;
    # then it stays under the aside name, and the log says where.
    try:
        os.link(aside, path)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror}; a file put there meanwhile is now {aside}") from None
    os.unlink(aside)


def restore_shadows(outcome):
    """Cover again what the host took away; returns the paths.

    A file replaced on the host by a rename (vim, readline and GLib save so)
    is a new dentry there, and the kernel detaches every mount on the old
    one, in every namespace: the vault's shadow of it is gone, and a program
    inside would write to the host's file (or, for a hidden one, read it).
    The keeper calls this whenever its mount table changes (as that
    detaching does): a path that no longer shows what covered it gets the
    vault's copy bound again, or its empty read-only layer."""
    restored = []
    for entry in outcome.bound:
        for attempt in range(COVER_AGAIN_TRIES):
            try:
                if _cover_again(entry, outcome):
                    restored.append(entry[0].dest)
                break
            except OSError as exc:
                # ENOENT: the file was replaced again between our look and
                # the bind (a GTK program outside saving recently-used.xbel
                # twice), so the bind met a dentry already gone.  Nothing
                # else would cover the new one: look again.
                if exc.errno != errno.ENOENT or attempt == COVER_AGAIN_TRIES - 1:
                    raise
                time.sleep(0.005)
    return restored


COVER_AGAIN_TRIES = 50


def _cover_again(entry, outcome):
    step, identity = entry
    try:
        info = os.stat(step.dest)
    except FileNotFoundError:
        return False  # removed on the host: nothing there to cover (docs/context.md)
    if (info.st_dev, info.st_ino) == identity:
        return False
    if step.kind == "shadow":
        kernel.bind_mount(step.source.rstrip("/"), step.dest)
    elif stat.S_ISDIR(info.st_mode):
        kernel.mount_tmpfs(step.dest, mode=0o500, size="4k", readonly=True)
    else:
        kernel.bind_mount(f"/proc/self/fd/{outcome.empty_fd}", step.dest, readonly=True)
    info = os.stat(step.dest)
    entry[1] = (info.st_dev, info.st_ino)
    return True


def _host_view(step):
    """Bind the host's directory (step.source) read-only at step.dest, a
    directory of nsshell's runtime directory, before it is shadowed.  A
    missing one is made, empty, on the host, as the host's own dconf-service
    does at the first setting saved: else the shadow could not cover it,
    and a setting saved inside would land on the host."""
    os.makedirs(step.source, mode=0o700, exist_ok=True)
    _make_dir(step.dest, 0o700)
    kernel.bind_mount(step.source, step.dest, readonly=True)
    return "read-only"


def _dconf_profile(step):
    """The vault's dconf profile: its own database first (the one written),
    then the host's, read-only (step.source), then the system databases the
    host's profile names."""
    lines = ["user-db:user", f"file-db:{os.path.join(step.source, 'user')}"]
    try:
        with open(DCONF_SYSTEM_PROFILE) as f:
            lines += [line.strip() for line in f if line.strip() and not line.strip().startswith(("user-db:", "#"))]
    except OSError:
        pass
    _make_dir(os.path.dirname(step.dest), 0o700)
    fd = os.open(step.dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return "the vault's database over the host's"


def _private_dir(step):
    """A 0700 tmpfs of this namespace over step.dest, which is made on the
    host, empty, if missing (as the program that uses it would make it)."""
    if not os.path.isdir(os.path.dirname(step.dest)):
        return "missing on host"
    try:
        os.mkdir(step.dest, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        return f"not covered: {exc.strerror}"
    if os.path.islink(step.dest) or not os.path.isdir(step.dest):
        return "not covered: not a directory"  # a mount would follow a link elsewhere
    kernel.mount_tmpfs(step.dest, mode=0o700, size="1m")
    return "tmpfs, seen inside only"


def _private_bus(step):
    sessionbus.prepare_directory(step.dest)
    return "tmpfs for the vault's session bus"


def _env_for(dest):
    name = os.path.basename(dest)
    if name == ".viminfo":
        return "VIMINIT"
    if name == ".python_history":
        return "PYTHONSTARTUP"
    for variable, file_name in TOOL_STATE_ENV:
        if file_name == name:
            return variable
    return None


class EmptyFile:
    """An empty regular file to bind read-only over hidden files (a bind of
    /dev/null would still take writes: a read-only mount does not stop
    writes to a device).  It lives on a small tmpfs mounted, for the
    moment of the set-up only, over the vault's .nsshell directory: no
    session runs yet, and the binds keep the file after that tmpfs is
    unmounted again."""

    def __init__(self, mountpoint):
        self.scratch = os.path.join(mountpoint, ".nsshell")
        self.path = None

    def get(self):
        if self.path is None:
            _make_dir(self.scratch, 0o700)
            kernel.mount_tmpfs(self.scratch, mode=0o700, size="4k")
            self.path = os.path.join(self.scratch, "empty")
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o400))
        return self.path

    def release(self):
        if self.path is not None:
            kernel.unmount(self.scratch, detach=True)
            self.path = None


def _hide(step, empty):
    try:
        info = os.stat(step.dest)
    except FileNotFoundError:
        return "missing on host"
    if stat.S_ISDIR(info.st_mode):
        kernel.mount_tmpfs(step.dest, mode=0o500, size="4k", readonly=True)
    else:
        kernel.bind_mount(empty.get(), step.dest, readonly=True)
    return "hidden"


def hide_for_this_command(paths, mountpoint):
    """`nsshell run --hide`: cover paths in a mount namespace of this
    process's own, after it joined the vault and before it execs (it holds
    the vault's user-namespace capabilities until then, and loses them at
    exec).  The vault's own namespace, and every other session, is unchanged."""
    from nsshell import paths as nsshell_paths

    from nsshell.errors import FAILURE, NsshellError

    try:
        kernel.unshare_mount_namespace()
        empty = EmptyFile(mountpoint)
        try:
            for path in paths:
                _hide(Step("hide", expand(path, nsshell_paths.home())), empty)
        finally:
            empty.release()
    except OSError as exc:
        raise NsshellError(f"--hide: {exc}; nothing was started", FAILURE) from None


def _make_dir(path, mode):
    os.makedirs(path, mode=mode, exist_ok=True)


def _make_mount_target(path, is_dir):
    if is_dir:
        os.makedirs(path, mode=0o700, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))


_EXECUTORS = {
    "offline": _offline,
    "private tmp": _private_tmp,
    "shadow": _shadow,
    "host view": _host_view,
    "dconf profile": _dconf_profile,
    "private bus": _private_bus,
    "private dir": _private_dir,
}
