# shellcheck shell=bash
#
# The rc file of a bash that `nsshell enter` starts inside a vault
# (`bash --rcfile THIS -i`).  It stands in for ~/.bashrc: it runs it, loads
# the nsshell integration if that did not, and then applies the
# inside-the-vault settings last, so nothing in the user's rc undoes them:
# HISTFILE inside the vault, the prompt hook at the end of PROMPT_COMMAND.
# (Debian's bash reads /etc/bash.bashrc before this file, as usual.)

if [[ -f ~/.bashrc ]]; then
    # shellcheck source=/dev/null
    . ~/.bashrc
fi

if ! \builtin declare -F __nsshell_setup_inside >/dev/null; then
    # The rc has no `eval "$(nsshell init bash)"`.  Render nsshell.bash the way
    # `nsshell init bash` would, with builtins: no Python on the way in.
    __nsshell_tpl=
    IFS= \builtin read -r -d '' __nsshell_tpl <"${BASH_SOURCE[0]%/*}/nsshell.bash" || :
    __nsshell_exe=nsshell
    if \builtin hash nsshell 2>/dev/null && [[ -n ${BASH_CMDS[nsshell]-} ]]; then
        __nsshell_exe=${BASH_CMDS[nsshell]}
    fi
    \builtin printf -v __nsshell_exe '%q' "${__nsshell_exe}"
    __nsshell_tpl=${__nsshell_tpl//__NSSHELL_EXE__/"${__nsshell_exe}"}
    # Never shadow a real `vault` program (HashiCorp Vault): then the
    # function is called nsshell, which wraps the nsshell command.
    __nsshell_name=vault
    if \builtin hash vault 2>/dev/null; then __nsshell_name=nsshell; fi
    __nsshell_tpl=${__nsshell_tpl//__NSSHELL_CMD__/"${__nsshell_name}"}
    __nsshell_tpl=${__nsshell_tpl//__NSSHELL_PROMPT__/1}
    \builtin eval "${__nsshell_tpl}"
    \builtin unset __nsshell_tpl __nsshell_exe __nsshell_name
fi

__nsshell_setup_inside
