# shellcheck shell=bash
#
# nsshell for bash: the `vault` function, a prompt marker while inside a vault,
# and TAB completion.  Load it from ~/.bashrc, best as the last line:
#
#     eval "$(nsshell init bash)"
#
# `nsshell init bash [--cmd NAME] [--no-prompt]` prints this file with the
# tokens __NSSHELL_EXE__, __NSSHELL_CMD__ and __NSSHELL_PROMPT__ replaced.
# Sourcing it twice is harmless.  Drawing a prompt and completing a vault name
# use builtins only: they start no process (docs/shells.md has the numbers).

__nsshell_cmd=__NSSHELL_CMD__
__nsshell_prompt=__NSSHELL_PROMPT__

# --- the command ---------------------------------------------------------------

# `vault enter|leave` need the shell itself; every other verb is nsshell's.
# An alias of the same name would shadow the function: you asked for it.
\builtin unalias __NSSHELL_CMD__ &>/dev/null || \builtin true
function __NSSHELL_CMD__ {
    case ${1-} in
    '')
        __nsshell_usage >&2
        return 2
        ;;
    help | -h | --help)
        __nsshell_usage
        return 0
        ;;
    enter)
        \builtin shift
        __nsshell_enter "$@"
        ;;
    leave)
        \builtin shift
        __nsshell_leave "$@"
        ;;
    *) \command __NSSHELL_EXE__ "$@" ;;
    esac
}

# The same text as `vault help` in zsh and xonsh (tests/test_newcomer.py).
function __nsshell_usage {
    \builtin printf '%s\n' \
        "usage: ${__nsshell_cmd} COMMAND [ARGS...]" \
        "" \
        "  enter NAME               start a shell inside vault NAME ('${__nsshell_cmd} leave' returns)" \
        "  leave                    leave the shell that '${__nsshell_cmd} enter' started" \
        "  run NAME -- COMMAND...   run one command inside vault NAME" \
        "  list                     the vaults, and whether they are open" \
        "  open, lock, status, ps, create, remove, doctor" \
        "                           as 'nsshell COMMAND' (see 'nsshell COMMAND --help')" \
        "  help                     this text"
}

function __nsshell_enter {
    if [[ -n ${NSSHELL_VAULT-} ]]; then
        # Nesting would hide the outer vault's shell behind this one; say what to do.
        if [[ ${1-} == "${NSSHELL_VAULT}" ]]; then
            \builtin printf '%s\n' "nsshell: you are already inside vault '${NSSHELL_VAULT}'" >&2
        else
            \builtin printf '%s\n' "nsshell: you are inside vault '${NSSHELL_VAULT}'; leave it first with '${__nsshell_cmd} leave', then run '${__nsshell_cmd} enter ${1-NAME}'" >&2
        fi
        return 2
    fi
    # Write our history out before the inner shell starts, read back what
    # others appended after it ends (history mode "outer" shares the file).
    if [[ -n ${HISTFILE-} ]]; then \builtin history -a; fi
    # A foreground child: `vault leave` (exit) brings us back here, after
    # the CLI said what keeps the vault open, if anything.  Without --shell the
    # fast path of `nsshell enter NAME` starts $SHELL; pass ours when that differs.
    if [[ ${SHELL-} == */bash || ${SHELL-} == bash ]]; then
        \command __NSSHELL_EXE__ enter "$@"
    else
        \command __NSSHELL_EXE__ enter --shell "${BASH}" "$@"
    fi
    \builtin local __nsshell_status=$?
    if [[ -n ${HISTFILE-} ]]; then \builtin history -n; fi
    return "${__nsshell_status}"
}

function __nsshell_leave {
    if [[ -z ${NSSHELL_VAULT-} ]]; then
        \builtin printf '%s\n' "nsshell: not inside a vault; nothing to leave" >&2
        return 1
    fi
    if [[ ${NSSHELL_SHELL_PID-} != "$$" ]]; then
        # Only the shell `vault enter` started may leave; closing a shell
        # nested inside it would just drop back into the vault.
        if [[ -n ${NSSHELL_SHELL_PID-} ]]; then
            \builtin printf '%s\n' "nsshell: this shell runs inside another shell in vault '${NSSHELL_VAULT}' (pid ${NSSHELL_SHELL_PID}); type 'exit' to return to it, then '${__nsshell_cmd} leave'" >&2
        else
            \builtin printf '%s\n' "nsshell: this shell was not started by '${__nsshell_cmd} enter'; type 'exit' to end it" >&2
        fi
        return 1
    fi
    \builtin exit "$@"
}

# --- inside a vault: history and prompt ------------------------------------------

# Keep what is typed inside the vault out of ~/.bash_history, which every
# process of the user can read.  Run after the user's rc (inner.bashrc does),
# so a HISTFILE= there cannot undo it.
function __nsshell_history {
    \builtin local __nsshell_dir
    case ${NSSHELL_HISTORY-} in
    outer) ;;
    vault | '')
        # '' : a shell started by `nsshell run NAME -- bash`; use the vault's
        # history directory if a session made one, else keep no history.
        __nsshell_dir=${NSSHELL_HISTDIR:-${NSSHELL_MOUNTPOINT-}/.nsshell}
        if [[ -n ${NSSHELL_MOUNTPOINT-} && -d ${__nsshell_dir} && -w ${__nsshell_dir} ]]; then
            HISTFILE=${__nsshell_dir}/bash_history
        else
            \builtin unset HISTFILE
        fi
        ;;
    *) \builtin unset HISTFILE ;;
    esac
}

# What the prompt shows.  Literal ${...} in PS1: bash expands it at each
# prompt and never expands the result again, so a vault name cannot inject
# anything; \[ \] are decoded before that, so the colour variables may hold
# raw escape codes.
# shellcheck disable=SC2016
__nsshell_mark='\[${__nsshell_c}\]${__nsshell_seg}\[${__nsshell_r}\]'
__nsshell_c=
__nsshell_r=
__nsshell_seg=

# Runs last in PROMPT_COMMAND, inside a vault only.  Builtins only, and as
# little as possible per prompt, since every statement costs microseconds:
# one [[ ]] checks that the mount is still there and that nothing the marker
# depends on changed since the last prompt (PS1 is compared with the value we
# left, not searched); only then does __nsshell_prompt_update do real work.
# A dead FUSE mount fails the -d test (ENOTCONN), an unmounted one lacks the
# .nsshell directory: the marker then says "locked".  (shopt promptvars is
# looked at only when something else changed.)
__nsshell_s=0
function __nsshell_prompt_hook {
    __nsshell_s=$?
    if [[ -d ${__nsshell_probe:-${NSSHELL_MOUNTPOINT-}/.} && ${PS1-} == "${__nsshell_ps1-}" &&
        ${NSSHELL_VAULT-}:${NSSHELL_PROMPT-}:${NO_COLOR:+plain}:${__nsshell_prompt} == "${__nsshell_env-}" ]]; then
        return "${__nsshell_s}"
    fi
    __nsshell_prompt_update
    return "${__nsshell_s}"
}

# The slow path: recompute the segment if its inputs changed, then put the
# mark into PS1 (or take it out), and remember the PS1 we left.
function __nsshell_prompt_update {
    \builtin local __nsshell_state=open
    if [[ ! -d ${__nsshell_probe:-${NSSHELL_MOUNTPOINT-}/.} ]]; then __nsshell_state=locked; fi
    __nsshell_env=${NSSHELL_VAULT-}:${NSSHELL_PROMPT-}:${NO_COLOR:+plain}:${__nsshell_prompt}
    if [[ ${__nsshell_state}:${__nsshell_env}:${BASHOPTS} != "${__nsshell_key-}" ]]; then
        __nsshell_key=${__nsshell_state}:${__nsshell_env}:${BASHOPTS}
        __nsshell_segment "${__nsshell_state}"
    fi
    if [[ -z ${__nsshell_seg} ]]; then
        if [[ ${PS1-} == *"${__nsshell_mark}"* ]]; then PS1=${PS1//"${__nsshell_mark}"/}; fi
    elif [[ ${PS1-} != *"${__nsshell_mark}"* ]]; then
        PS1=${__nsshell_mark}${PS1-}
    fi
    # Locked: leave __nsshell_ps1 stale, so every prompt looks again.
    if [[ ${__nsshell_state} == open ]]; then __nsshell_ps1=${PS1-}; else __nsshell_ps1=; fi
}

# Set the segment and its colours for state $1 (open|locked); empty when off.
function __nsshell_segment {
    __nsshell_seg=
    __nsshell_c=
    __nsshell_r=
    if [[ -z ${NSSHELL_VAULT-} || ${NSSHELL_PROMPT-} == 0 || ${__nsshell_prompt} != 1 ]] ||
        ! \builtin shopt -q promptvars; then
        return 0
    fi
    if [[ $1 == locked ]]; then
        __nsshell_seg="[vault:${NSSHELL_VAULT} locked] "
        __nsshell_c=$'\e[1;31m'
    else
        __nsshell_seg="[vault:${NSSHELL_VAULT}] "
        __nsshell_c=$'\e[1;36m'
    fi
    __nsshell_r=$'\e[0m'
    if [[ -n ${NO_COLOR-} ]]; then
        __nsshell_c=
        __nsshell_r=
    fi
}

# Append the hook to PROMPT_COMMAND (a string, or an array in bash 5.1+),
# moving it to the end if it is there already.
function __nsshell_hook_last {
    \builtin local __nsshell_pc __nsshell_e
    \builtin local -a __nsshell_new
    __nsshell_new=()
    if [[ -n ${PROMPT_COMMAND+set} && ${PROMPT_COMMAND@a} == *a* ]]; then
        for __nsshell_e in "${PROMPT_COMMAND[@]}"; do
            if [[ ${__nsshell_e} != __nsshell_prompt_hook ]]; then __nsshell_new+=("${__nsshell_e}"); fi
        done
        PROMPT_COMMAND=("${__nsshell_new[@]}" __nsshell_prompt_hook)
    else
        __nsshell_pc=${PROMPT_COMMAND-}
        __nsshell_pc=${__nsshell_pc//$'\n'__nsshell_prompt_hook/}
        if [[ ${__nsshell_pc} == __nsshell_prompt_hook ]]; then __nsshell_pc=; fi
        # shellcheck disable=SC2178 # a string PROMPT_COMMAND stays a string
        PROMPT_COMMAND=${__nsshell_pc:+${__nsshell_pc}$'\n'}__nsshell_prompt_hook
    fi
}

# Everything a shell inside a vault needs; safe to call again.
function __nsshell_setup_inside {
    __nsshell_history
    __nsshell_probe=${NSSHELL_MOUNTPOINT-}/.
    if [[ -d ${NSSHELL_MOUNTPOINT-}/.nsshell ]]; then
        __nsshell_probe=${NSSHELL_MOUNTPOINT}/.nsshell
    fi
    if [[ ${__nsshell_prompt} == 1 ]]; then
        __nsshell_hook_last
    fi
}

# --- completion -----------------------------------------------------------------

# Add the words among "$@" that start with $1.
function __nsshell_add {
    \builtin local __nsshell_cur=$1 __nsshell_w
    \builtin shift
    for __nsshell_w in "$@"; do
        if [[ ${__nsshell_w} == "${__nsshell_cur}"* ]]; then COMPREPLY+=("${__nsshell_w}"); fi
    done
}

# Vault names starting with $1: a glob over the names directory that nsshell
# keeps in sync, one empty file per vault.  No process, no Python.
function __nsshell_add_names {
    \builtin local __nsshell_dir=${HOME-}/.config __nsshell_f __nsshell_fg=0
    if [[ ${XDG_CONFIG_HOME-} == /* ]]; then __nsshell_dir=${XDG_CONFIG_HOME}; fi
    if \builtin shopt -q failglob; then
        __nsshell_fg=1
        \builtin shopt -u failglob
    fi
    for __nsshell_f in "${__nsshell_dir}/nsshell/names/$1"*; do
        if [[ -e ${__nsshell_f} ]]; then COMPREPLY+=("${__nsshell_f##*/}"); fi
    done
    if ((__nsshell_fg)); then \builtin shopt -s failglob; fi
}

# `run NAME -- CMD ARGS`: complete CMD ARGS like a command line of their own.
function __nsshell_complete_command {
    if \builtin declare -F _command_offset >/dev/null; then
        _command_offset "$1" # bash-completion is loaded
    elif ((COMP_CWORD == $1)); then
        # The one completion that forks: bash 5.2 cannot list commands into
        # an array without a subshell.  Vault names never get here.
        \builtin mapfile -t COMPREPLY < <(\builtin compgen -c -- "${COMP_WORDS[COMP_CWORD]-}")
    else
        \builtin compopt -o default
    fi
}

function __nsshell_complete {
    \builtin local cur=${COMP_WORDS[COMP_CWORD]-} prev='' verb='' i at=0 npos=0 w
    COMPREPLY=()
    if ((COMP_CWORD > 0)); then prev=${COMP_WORDS[COMP_CWORD - 1]-}; fi
    for ((i = 1; i < COMP_CWORD; i++)); do
        if [[ ${COMP_WORDS[i]} != -* ]]; then
            verb=${COMP_WORDS[i]}
            at=$i
            break
        fi
    done
    if [[ -z ${verb} ]]; then
        if [[ ${cur} == -* ]]; then
            __nsshell_add "${cur}" --help --version --json
        else
            __nsshell_add "${cur}" create enter run open lock list status ps remove add passwd keyring doctor init
            if [[ ${COMP_WORDS[0]} == "${__nsshell_cmd}" ]]; then __nsshell_add "${cur}" leave help; fi
        fi
        return 0
    fi
    if [[ ${verb} == run ]]; then
        for ((i = at + 1; i < COMP_CWORD; i++)); do
            if [[ ${COMP_WORDS[i]} == -- ]]; then
                __nsshell_complete_command $((i + 1))
                return 0
            fi
        done
    fi
    case ${prev} in
    --passfile | --new-passfile | --extpass | --shell)
        \builtin compopt -o default
        return 0
        ;;
    --cipher-dir | --mountpoint)
        \builtin compopt -o dirnames
        return 0
        ;;
    --cmd) return 0 ;;
    esac
    if [[ ${cur} == -* ]]; then
        case ${verb} in
        create) __nsshell_add "${cur}" --passfile --cipher-dir --mountpoint --json ;;
        enter) __nsshell_add "${cur}" --passfile --extpass --shell ;;
        run) __nsshell_add "${cur}" --passfile --extpass -- ;;
        open) __nsshell_add "${cur}" --passfile --extpass --quiet ;;
        lock) __nsshell_add "${cur}" --all --force ;;
        list | status | ps | doctor) __nsshell_add "${cur}" --json ;;
        remove) __nsshell_add "${cur}" --purge --yes ;;
        add) __nsshell_add "${cur}" --cipher-dir --mountpoint --passfile ;;
        passwd) __nsshell_add "${cur}" --passfile --new-passfile ;;
        keyring) __nsshell_add "${cur}" --passfile ;;
        init) __nsshell_add "${cur}" --cmd --no-prompt ;;
        esac
        return 0
    fi
    # How many positional words the verb already has.
    for ((i = at + 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        case ${w} in
        --passfile | --new-passfile | --extpass | --shell | --cipher-dir | --mountpoint | --cmd) ((i += 1)) ;;
        -*) ;;
        *) ((npos += 1)) ;;
        esac
    done
    case ${verb} in
    enter | run | open | lock | ps | remove | status | passwd)
        if ((npos == 0)); then
            __nsshell_add_names "${cur}"
        elif [[ ${verb} == run && ${npos} == 1 ]]; then
            __nsshell_add "${cur}" --
        fi
        ;;
    keyring)
        if ((npos == 0)); then
            __nsshell_add "${cur}" add remove
        elif ((npos == 1)); then
            __nsshell_add_names "${cur}"
        fi
        ;;
    init)
        if ((npos == 0)); then __nsshell_add "${cur}" bash zsh xonsh; fi
        ;;
    esac
    return 0
}

\builtin complete -F __nsshell_complete __NSSHELL_CMD__ nsshell

# --- start ------------------------------------------------------------------------

if [[ -n ${NSSHELL_VAULT-} ]]; then
    __nsshell_setup_inside
fi
