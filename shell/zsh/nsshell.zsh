# nsshell for zsh: the `vault` function, a prompt marker while inside a vault,
# and TAB completion.  Load it from ~/.zshrc, best as the last line:
#
#     eval "$(nsshell init zsh)"
#
# `nsshell init zsh [--cmd NAME] [--no-prompt]` prints this file with the
# tokens __NSSHELL_EXE__, __NSSHELL_CMD__ and __NSSHELL_PROMPT__ replaced.
# Sourcing it twice is harmless.  Drawing a prompt and completing a vault name
# use builtins only: they start no process (docs/shells.md has the numbers).

typeset -g __nsshell_cmd=__NSSHELL_CMD__
typeset -g __nsshell_prompt=__NSSHELL_PROMPT__
typeset -ga precmd_functions  # keeps its value; makes it exist under nounset

# --- the command ---------------------------------------------------------------

# `vault enter|leave` need the shell itself; every other verb is nsshell's.
# An alias of the same name would shadow the function: you asked for it.
builtin unalias __NSSHELL_CMD__ &>/dev/null || builtin true
function __NSSHELL_CMD__ {
    case ${1-} in
    ('') __nsshell_usage >&2; return 2 ;;
    (help|-h|--help) __nsshell_usage ;;
    (enter) builtin shift; __nsshell_enter "$@" ;;
    (leave) builtin shift; __nsshell_leave "$@" ;;
    (*) command __NSSHELL_EXE__ "$@" ;;
    esac
}

# The same text as `vault help` in bash and xonsh (tests/test_newcomer.py).
function __nsshell_usage {
    builtin print -rl -- \
        "usage: $__nsshell_cmd COMMAND [ARGS...]" \
        "" \
        "  enter NAME               start a shell inside vault NAME ('$__nsshell_cmd leave' returns)" \
        "  leave                    leave the shell that '$__nsshell_cmd enter' started" \
        "  run NAME -- COMMAND...   run one command inside vault NAME" \
        "  list                     the vaults, and whether they are open" \
        "  open, lock, status, ps, create, remove, doctor" \
        "                           as 'nsshell COMMAND' (see 'nsshell COMMAND --help')" \
        "  help                     this text"
}

function __nsshell_enter {
    emulate -L zsh
    if [[ -n ${NSSHELL_VAULT-} ]]; then
        # Nesting would hide the outer vault's shell behind this one; say what to do.
        if [[ ${1-} == "$NSSHELL_VAULT" ]]; then
            builtin print -ru2 -- "nsshell: you are already inside vault '$NSSHELL_VAULT'"
        else
            builtin print -ru2 -- "nsshell: you are inside vault '$NSSHELL_VAULT'; leave it first with '$__nsshell_cmd leave', then run '$__nsshell_cmd enter ${1-NAME}'"
        fi
        return 2
    fi
    # Write our history out before the inner shell starts, read back what
    # others appended after it ends (history mode "outer" shares the file).
    [[ -n ${HISTFILE-} ]] && builtin fc -AI
    # A foreground child: `vault leave` (exit) brings us back here, after
    # the CLI said what keeps the vault open, if anything.  Without --shell the
    # fast path of `nsshell enter NAME` starts $SHELL; pass ours when that differs.
    if [[ ${SHELL:t} == zsh ]]; then
        command __NSSHELL_EXE__ enter "$@"
    else
        command __NSSHELL_EXE__ enter --shell "${${:-/proc/$$/exe}:A}" "$@"
    fi
    local -i status_=$?
    [[ -n ${HISTFILE-} ]] && builtin fc -RI
    return status_
}

function __nsshell_leave {
    emulate -L zsh
    if [[ -z ${NSSHELL_VAULT-} ]]; then
        builtin print -ru2 -- "nsshell: not inside a vault; nothing to leave"
        return 1
    fi
    if [[ ${NSSHELL_SHELL_PID-} != $$ ]]; then
        # Only the shell `vault enter` started may leave; closing a shell
        # nested inside it would just drop back into the vault.
        if [[ -n ${NSSHELL_SHELL_PID-} ]]; then
            builtin print -ru2 -- "nsshell: this shell runs inside another shell in vault '$NSSHELL_VAULT' (pid $NSSHELL_SHELL_PID); type 'exit' to return to it, then '$__nsshell_cmd leave'"
        else
            builtin print -ru2 -- "nsshell: this shell was not started by '$__nsshell_cmd enter'; type 'exit' to end it"
        fi
        return 1
    fi
    builtin exit "$@"
}

# --- inside a vault: history and prompt ------------------------------------------

# Keep what is typed inside the vault out of ~/.zsh_history, which every
# process of the user can read.  Run after the user's .zshrc (the shipped
# zdotdir/.zshrc does), so a HISTFILE= there cannot undo it.
function __nsshell_history {
    local dir
    case ${NSSHELL_HISTORY-} in
    (outer) ;;
    (vault|'')
        # '' : a shell started by `nsshell run NAME -- zsh`; use the vault's
        # history directory if a session made one, else keep no history.
        dir=${NSSHELL_HISTDIR:-${NSSHELL_MOUNTPOINT-}/.nsshell}
        if [[ -n ${NSSHELL_MOUNTPOINT-} && -d $dir && -w $dir ]]; then
            typeset -g HISTFILE=$dir/zsh_history
        else
            builtin unset HISTFILE
        fi
        ;;
    (*) builtin unset HISTFILE ;;
    esac
}

typeset -g __nsshell_seg='' __nsshell_want='' __nsshell_key='' __nsshell_env='' __nsshell_ps1=''
typeset -gi __nsshell_s=0

# Runs last in precmd_functions, inside a vault only.  Builtins only, no
# `emulate`, no locals, and one [[ ]]: a zsh function call is the biggest
# cost of a prompt hook, and each statement adds to it.  The [[ ]] checks that
# the mount is still there and that nothing the marker depends on changed
# since the last prompt (PROMPT is compared with the value we left, not
# searched); only then does __nsshell_precmd_update do real work.  A dead
# FUSE mount fails the -d test (ENOTCONN), an unmounted one lacks the
# .nsshell directory: the marker then says "locked".
function __nsshell_precmd {
    __nsshell_s=$?
    [[ -d ${__nsshell_probe:-${NSSHELL_MOUNTPOINT-}/.} && $PROMPT == "$__nsshell_ps1" &&
        ${NSSHELL_VAULT-}:${NSSHELL_PROMPT-}:${NO_COLOR:+plain}:$__nsshell_prompt:${options[promptsubst]-} == "$__nsshell_env" ]] ||
        __nsshell_precmd_update
    return __nsshell_s
}

# The slow path: recompute the segment if its inputs changed, put it at the
# front of PROMPT, and remember the PROMPT we left.
function __nsshell_precmd_update {
    local state=open
    [[ -d ${__nsshell_probe:-${NSSHELL_MOUNTPOINT-}/.} ]] || state=locked
    [[ -o promptsubst ]] && state+=+subst
    __nsshell_env=${NSSHELL_VAULT-}:${NSSHELL_PROMPT-}:${NO_COLOR:+plain}:$__nsshell_prompt:${options[promptsubst]-}
    if [[ $state:$__nsshell_env != "$__nsshell_key" ]]; then
        __nsshell_key=$state:$__nsshell_env
        __nsshell_segment $state
    fi
    if [[ $__nsshell_want != "$__nsshell_seg" || $PROMPT != *"$__nsshell_seg"* ]]; then
        [[ -n $__nsshell_seg ]] && PROMPT=${PROMPT/"$__nsshell_seg"/}
        PROMPT=$__nsshell_want$PROMPT
        __nsshell_seg=$__nsshell_want
    fi
    # Locked: leave __nsshell_ps1 stale, so every prompt looks again.
    if [[ $state == open* ]]; then __nsshell_ps1=$PROMPT; else __nsshell_ps1=''; fi
    return 0
}

# The segment for state $1 (open|locked, +subst under prompt_subst), empty
# when off.  The name is baked into PROMPT, escaped for prompt expansion (%
# doubled) and, under prompt_subst, for parameter and command expansion too,
# so it can never run as code.
function __nsshell_segment {
    emulate -L zsh
    local text
    __nsshell_want=''
    if [[ -z ${NSSHELL_VAULT-} || ${NSSHELL_PROMPT-} == 0 || $__nsshell_prompt != 1 ]]; then
        return 0
    fi
    if [[ $1 == locked* ]]; then
        text="[vault:$NSSHELL_VAULT locked]"
        __nsshell_want='%B%F{red}'
    else
        text="[vault:$NSSHELL_VAULT]"
        __nsshell_want='%B%F{cyan}'
    fi
    text=${text//\%/%%}
    if [[ $1 == *+subst ]]; then
        text=${text//\\/\\\\}
        text=${text//\$/\\\$}
        text=${text//\`/\\\`}
    fi
    if [[ -n ${NO_COLOR-} ]]; then
        __nsshell_want="$text "
    else
        __nsshell_want="$__nsshell_want$text%f%b "
    fi
}

# Everything a shell inside a vault needs; safe to call again.
function __nsshell_setup_inside {
    __nsshell_history
    typeset -g __nsshell_probe=${NSSHELL_MOUNTPOINT-}/.
    [[ -d ${NSSHELL_MOUNTPOINT-}/.nsshell ]] && __nsshell_probe=$NSSHELL_MOUNTPOINT/.nsshell
    if [[ $__nsshell_prompt == 1 ]]; then
        # Last, so it sees the PROMPT that themes and starship just drew.
        precmd_functions=(${precmd_functions:#__nsshell_precmd} __nsshell_precmd)
    fi
    return 0
}

# --- completion -----------------------------------------------------------------

# Vault names: a glob over the names directory that nsshell keeps in sync,
# one empty file per vault.  No process, no Python.
function __nsshell_names {
    local dir=$HOME/.config
    [[ ${XDG_CONFIG_HOME-} == /* ]] && dir=$XDG_CONFIG_HOME
    reply=( $dir/nsshell/names/*(N:t) )
}

# compsys (after compinit).
function __nsshell_complete {
    local -a verbs reply
    local verb prev=${words[CURRENT-1]} cur=${words[CURRENT]}
    local -i i at=0 npos=0
    for (( i = 2; i < CURRENT; i++ )); do
        if [[ ${words[i]} != -* ]]; then
            verb=${words[i]}
            at=i
            break
        fi
    done
    if [[ -z $verb ]]; then
        if [[ $cur == -* ]]; then
            compadd -- --help --version --json
            return
        fi
        verbs=(
            'create:create a new encrypted vault'
            'enter:start a shell inside a vault'
            'run:run one command inside a vault'
            'open:unlock a vault and keep it open'
            'lock:lock a vault (or all of them)'
            'list:list vaults and whether they are open'
            'status:show details of one vault, or all'
            'ps:list the processes that can see a vault'
            'remove:forget a vault'
            'add:adopt an existing gocryptfs directory as a vault'
            'passwd:change the passphrase of a vault'
            'keyring:keep the passphrase of a vault in the login keyring, or forget it'
            'doctor:check that this machine can run vaults'
            'init:print shell integration code'
        )
        [[ ${words[1]} == $__nsshell_cmd ]] && verbs+=('leave:leave the vault this shell is in' 'help:what the vault command does')
        _describe -t commands 'nsshell command' verbs
        return
    fi
    if [[ $verb == run ]]; then
        for (( i = at + 1; i < CURRENT; i++ )); do
            if [[ ${words[i]} == -- ]]; then
                # run NAME -- CMD ARGS: complete CMD ARGS as a command line.
                words=("${(@)words[i+1,-1]}")
                (( CURRENT -= i ))
                _normal
                return
            fi
        done
    fi
    case $prev in
    (--passfile|--new-passfile|--shell) _files; return ;;
    (--extpass) _command_names -e; return ;;
    (--cipher-dir|--mountpoint) _files -/; return ;;
    (--cmd) return 1 ;;
    esac
    if [[ $cur == -* ]]; then
        case $verb in
        (create) compadd -- --passfile --cipher-dir --mountpoint --json ;;
        (enter) compadd -- --passfile --extpass --shell ;;
        (run) compadd -- --passfile --extpass -- ;;
        (open) compadd -- --passfile --extpass --quiet ;;
        (lock) compadd -- --all --force ;;
        (list|status|ps|doctor) compadd -- --json ;;
        (remove) compadd -- --purge --yes ;;
        (add) compadd -- --cipher-dir --mountpoint --passfile ;;
        (passwd) compadd -- --passfile --new-passfile ;;
        (keyring) compadd -- --passfile ;;
        (init) compadd -- --cmd --no-prompt ;;
        esac
        return
    fi
    for (( i = at + 1; i < CURRENT; i++ )); do
        case ${words[i]} in
        (--passfile|--new-passfile|--extpass|--shell|--cipher-dir|--mountpoint|--cmd) (( i += 1 )) ;;
        (-*) ;;
        (*) (( npos += 1 )) ;;
        esac
    done
    case $verb in
    (enter|run|open|lock|ps|remove|status|passwd)
        if (( npos == 0 )); then
            __nsshell_names
            compadd -X 'vault' -a reply
        elif [[ $verb == run ]] && (( npos == 1 )); then
            compadd -- --
        fi
        ;;
    (keyring)
        if (( npos == 0 )); then
            compadd -- add remove
        elif (( npos == 1 )); then
            __nsshell_names
            compadd -X 'vault' -a reply
        fi
        ;;
    (init)
        (( npos == 0 )) && compadd -- bash zsh xonsh
        ;;
    esac
}

# compctl, for a zsh that never runs compinit: verbs and vault names.
function __nsshell_compctl {
    local -a line
    local -i n
    read -cA line
    read -cn n
    if (( n == 2 )); then
        reply=(create enter run open lock list status ps remove add passwd keyring doctor init)
        [[ ${line[1]} == $__nsshell_cmd ]] && reply+=(leave help)
    elif (( n == 3 )) && [[ ${line[2]} == (enter|run|open|lock|ps|remove|status|passwd) ]]; then
        __nsshell_names
    elif (( n == 3 )) && [[ ${line[2]} == init ]]; then
        reply=(bash zsh xonsh)
    else
        reply=()
    fi
}

# compdef exists only once compinit has run.  Register now if it has,
# otherwise try again at the first prompt (the user's .zshrc may run compinit
# after this), and fall back to compctl.
function __nsshell_completion {
    if (( $+functions[compdef] )); then
        compdef __nsshell_complete __NSSHELL_CMD__ nsshell
        return 0
    fi
    return 1
}

function __nsshell_completion_retry {
    precmd_functions=(${precmd_functions:#__nsshell_completion_retry})
    __nsshell_completion && return 0
    compctl -K __nsshell_compctl -x 'r[--,;]' -l '' -- __NSSHELL_CMD__ nsshell
    return 0
}

if ! __nsshell_completion; then
    precmd_functions=(${precmd_functions:#__nsshell_completion_retry} __nsshell_completion_retry)
fi

# --- start ------------------------------------------------------------------------

if [[ -n ${NSSHELL_VAULT-} ]]; then
    __nsshell_setup_inside
fi
