# .zshrc of a zsh that `nsshell enter` starts inside a vault (see .zshenv
# here).  It gives the user back their ZDOTDIR, runs their .zshrc, loads the
# nsshell integration if that did not, and then applies the inside-the-vault
# settings last, so nothing in the user's rc undoes them: HISTFILE inside the
# vault, the prompt hook at the end of precmd_functions.

if [[ -n $__nsshell_user_zdotdir ]]; then
    export ZDOTDIR=$__nsshell_user_zdotdir
else
    builtin unset ZDOTDIR
fi

if [[ -f ${ZDOTDIR:-$HOME}/.zshrc ]]; then
    builtin source "${ZDOTDIR:-$HOME}/.zshrc"
fi

if (( ! $+functions[__nsshell_setup_inside] )); then
    # The rc has no `eval "$(nsshell init zsh)"`.  Render nsshell.zsh the way
    # `nsshell init zsh` would, with builtins: no Python on the way in.
    () {
        local tpl exe=${commands[nsshell]:-nsshell} name=vault
        # Never shadow a real `vault` program (HashiCorp Vault): then the
        # function is called nsshell, which wraps the nsshell command.
        (( $+commands[vault] )) && name=nsshell
        IFS= builtin read -r -d '' tpl <"$__nsshell_zdotdir/../nsshell.zsh"
        tpl=${tpl//__NSSHELL_EXE__/${(q)exe}}
        tpl=${tpl//__NSSHELL_CMD__/$name}
        tpl=${tpl//__NSSHELL_PROMPT__/1}
        builtin eval "$tpl"
    }
fi

__nsshell_setup_inside
builtin unset __nsshell_zdotdir __nsshell_user_zdotdir
