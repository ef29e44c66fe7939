# shellcheck shell=bash
# Shared set-up for scripts/demo and scripts/test: system packages, a venv,
# and (when started as root) an unprivileged user to run as, because
# nsshell's whole point is that it needs no root, and root hides bugs.

# dbus-daemon, python3-dbusmock and gnome-keyring: tests/desktop runs real buses with a mock
# logind and a real keyring (dbusmock runs under /usr/bin/python3, outside the venv); libnotify-bin:
# notify-send inside a vault, through its private bus (tests/desktop/test_bus_private.py);
# vim, less, sqlite3, screen: tests/context drives them inside a vault.
# tests/gui runs real GUI programs under Xvfb (xdotool finds and drives their
# windows, xclip reads what they show, imagemagick's import takes the
# screenshots, libglib2.0-bin's gsettings and dconf-cli read settings);
# okular alone pulls in about 460 KDE packages (66 s to install here).
NSSHELL_APT_PACKAGES=(gocryptfs fuse3 python3-venv zsh tmux shellcheck util-linux procps strace pipx man-db zoxide
    dbus-daemon python3-dbusmock gnome-keyring libnotify-bin
    vim less sqlite3 screen
    xvfb xdotool xclip imagemagick libglib2.0-bin dconf-cli at-spi2-core mousepad evince okular fontconfig fonts-dejavu-core)
NSSHELL_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() {
    if [[ -t 2 && -z ${NO_COLOR:-} ]]; then printf '\033[1m==> %s\033[0m\n' "$*" >&2; else printf '==> %s\n' "$*" >&2; fi
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Install what nsshell and its tests need (as root), or say exactly what to install.
ensure_system_packages() {
    local missing=() pkg
    for pkg in "${NSSHELL_APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        if [[ $EUID -eq 0 ]]; then
            say "installing ${missing[*]}"
            export DEBIAN_FRONTEND=noninteractive
            # Another apt (unattended-upgrades on a fresh machine) may hold the
            # dpkg lock for a while: wait for it instead of failing at once.
            apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
            apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null \
                || die "apt-get install ${missing[*]} failed"
        else
            die "missing packages; run: sudo apt-get install -y ${missing[*]}"
        fi
    fi
    # Distributions ship /dev/fuse as 0666; minimal machines without udev do not.
    if [[ -e /dev/fuse && ! -w /dev/fuse ]] || [[ $EUID -eq 0 && -e /dev/fuse && $(stat -c %a /dev/fuse) != 666 ]]; then
        if [[ $EUID -eq 0 ]]; then
            chmod 0666 /dev/fuse
        else
            die "/dev/fuse is not usable by you; run: sudo chmod 0666 /dev/fuse"
        fi
    fi
    ensure_hardened_gocryptfs
}

# The hardened gocryptfs (docs/install.md): a root-owned copy the user may
# execute but not read, so the kernel runs it non-dumpable and no other
# process of the user can read its memory (the master key) or its fds.
# nsshell uses it when it is there.  As root only; refreshed when the
# packaged gocryptfs changes.
NSSHELL_HARDENED_GOCRYPTFS=/usr/local/libexec/nsshell/gocryptfs
ensure_hardened_gocryptfs() {
    local source
    [[ $EUID -eq 0 ]] || return 0
    source=$(command -v gocryptfs) || die "gocryptfs is not installed"
    if ! cmp -s "$source" "$NSSHELL_HARDENED_GOCRYPTFS" \
        || [[ $(stat -c '%U %a' "$NSSHELL_HARDENED_GOCRYPTFS") != "root 711" ]]; then
        say "installing an execute-only copy of gocryptfs at $NSSHELL_HARDENED_GOCRYPTFS"
        install -d -m 0755 "$(dirname "$NSSHELL_HARDENED_GOCRYPTFS")"
        install -o root -g root -m 0711 "$source" "$NSSHELL_HARDENED_GOCRYPTFS.new.$$"
        mv -f "$NSSHELL_HARDENED_GOCRYPTFS.new.$$" "$NSSHELL_HARDENED_GOCRYPTFS"
    fi
}

# make_venv DIR EXTRAS: a venv in DIR/.venv with nsshell installed from DIR.
make_venv() {
    local dir=$1 extras=${2:-}
    if [[ ! -x $dir/.venv/bin/python ]]; then
        say "creating $dir/.venv"
        /usr/bin/python3 -m venv "$dir/.venv" || die "python3 -m venv failed (is python3-venv installed?)"
    fi
    say "installing nsshell${extras:+[$extras]} into $dir/.venv"
    "$dir/.venv/bin/pip" install -q --disable-pip-version-check -e "$dir${extras:+[$extras]}" \
        || die "pip install failed"
}

# ensure_user NAME: a plain unprivileged account (created when missing).
ensure_user() {
    local user=$1
    id "$user" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$user" || die "useradd $user failed"
}

# ensure_second_user USER OTHER: USER may run commands as OTHER through
# passwordless sudo (and only as OTHER).  For the test suite, as root only.
ensure_second_user() {
    local user=$1 other=$2
    ensure_user "$other"
    if ! command -v sudo >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq sudo >/dev/null \
            || die "apt-get install sudo failed"
    fi
    printf '%s ALL=(%s) NOPASSWD: ALL\n' "$user" "$other" > "/etc/sudoers.d/nsshell-$user"
    chmod 0440 "/etc/sudoers.d/nsshell-$user"
}

# copy_tree_for USER: a copy of this working tree that USER owns, in a
# directory of its own (two runs at once must not overwrite each other's
# copy); prints its path.  The copy sits beside a copy of ../shared, which
# the benchmarks and some docs refer to.  remove_tree_copy removes it.
copy_tree_for() {
    local user=$1 home run dest
    home=$(getent passwd "$user" | cut -d: -f6)
    run=$(mktemp -d "$home/run.XXXXXX") || die "mktemp in $home failed"
    dest=$run/nsshell
    mkdir -p "$dest"
    tar -C "$NSSHELL_REPO" --exclude=./.venv --exclude=./.git --exclude='__pycache__' -cf - . | tar -C "$dest" -xf -
    if [[ -d $NSSHELL_REPO/../shared ]]; then
        cp -r "$NSSHELL_REPO/../shared" "$run/shared"
    fi
    chown -R "$user:" "$run"
    printf '%s\n' "$dest"
}

# remove_tree_copy DEST: remove what copy_tree_for made.
remove_tree_copy() {
    local run
    run=$(dirname "$1")
    [[ $(basename "$run") == run.* ]] && rm -rf "$run"
}

# as_user USER CMD...: run CMD as USER with a clean, explicit environment.
as_user() {
    local user=$1 home
    shift
    home=$(getent passwd "$user" | cut -d: -f6)
    runuser -u "$user" -- env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash \
        PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
        NSSHELL_REQUIRE_KERNEL="${NSSHELL_REQUIRE_KERNEL:-}" NSSHELL_SECOND_USER="${NSSHELL_SECOND_USER:-}" PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-}" "$@"
}
