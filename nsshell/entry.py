"""The nsshell command's entry point (bin/nsshell-python, python -m nsshell).

The plain forms of ``run NAME -- COMMAND``, ``enter NAME`` and ``init
SHELL`` are the hot path: a shell or a script waits on them.  They are
recognised here by hand and go straight to nsshell.inside (or
nsshell.shells), before nsshell.cli and argparse are imported; every other
form goes to nsshell.cli.  Nothing on this path imports os
(nsshell.lightos says why).
"""

import sys

from nsshell.errors import exit_code_of


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    fast = fast_form(argv)
    if fast is None:
        from nsshell import cli

        return cli.main(argv)
    return exit_code_of(fast)


def fast_form(argv):
    """A callable for the plain forms of run, enter and init, else None."""
    if argv[:1] == ["run"] and "--" in argv[2:] and len(argv) >= 4 and not argv[1].startswith("-"):
        name, split = argv[1], argv.index("--", 2)
        options, command = argv[2:split], argv[split + 1 :]
        if not options:
            return lambda: _run(name, command, None)
        if len(options) == 2 and options[0] in ("--passfile", "--extpass"):
            # The unlock path; argparse would cost more than the rest of it.
            from nsshell.passphrase import PassphraseSource

            source = PassphraseSource(**{options[0][2:]: options[1]})
            return lambda: _run(name, command, source)
    if argv[:1] == ["enter"] and len(argv) in (2, 4) and not argv[1].startswith("-"):
        name = argv[1]
        if len(argv) == 2:
            return lambda: _enter(name, None)
        if argv[2] == "--shell":  # what the shell integrations call
            shell = argv[3]
            return lambda: _enter(name, shell)
    if argv[:1] == ["init"] and len(argv) >= 2 and argv[1] in ("bash", "zsh", "xonsh"):
        # Runs when the README's rc line finds its saved code stale: no argparse.
        options = argv[2:]
        cmd, prompt = "vault", True
        while options:
            if options[0] == "--no-prompt":
                prompt, options = False, options[1:]
            elif options[0] == "--cmd" and len(options) >= 2:
                cmd, options = options[1], options[2:]
            else:
                return None
        shell = argv[1]
        return lambda: _init(shell, cmd, prompt)
    return None


def _run(name, command, source):
    from nsshell import inside

    return inside.run(name, command, source)


def _enter(name, shell):
    from nsshell import inside

    code = inside.enter(name, shell)
    from nsshell import cli  # after the session: off the hot path

    cli.say_what_keeps_it_open(name)
    return code


def _init(shell, cmd, prompt):
    from nsshell import cli

    return cli.init_shell(shell, cmd, prompt)
