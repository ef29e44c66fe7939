# .zshenv of a zsh that `nsshell enter` starts inside a vault.  nsshell points
# ZDOTDIR here (and passes the user's own in NSSHELL_USER_ZDOTDIR) so that
# this file and the .zshrc next to it run instead of the user's; each of them
# runs the user's file, with the user's ZDOTDIR, in the same place.

typeset -g __nsshell_zdotdir=$ZDOTDIR
if [[ -n ${NSSHELL_USER_ZDOTDIR-} ]]; then
    export ZDOTDIR=$NSSHELL_USER_ZDOTDIR
else
    builtin unset ZDOTDIR
fi
builtin unset NSSHELL_USER_ZDOTDIR

if [[ -f ${ZDOTDIR:-$HOME}/.zshenv ]]; then
    builtin source "${ZDOTDIR:-$HOME}/.zshenv"
fi

# The user's .zshenv may set ZDOTDIR itself: remember where it ended up, then
# point zsh back here so that it reads our .zshrc next.
typeset -g __nsshell_user_zdotdir=${ZDOTDIR-}
ZDOTDIR=$__nsshell_zdotdir
