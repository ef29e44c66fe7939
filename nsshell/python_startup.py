"""PYTHONSTARTUP of interactive Pythons inside a vault (set by nsshell.inside).

Python 3.13 and later read PYTHON_HISTORY, which nsshell points into the
vault.  Older ones always keep the REPL's history in ~/.python_history, on
the host: replace the hook that sets that up (site.register_readline) by
the same hook with the vault's file.  Then run the user's own startup file.
Never imported by nsshell itself.
"""


def _nsshell_keep_history_in_vault():
    import os
    import sys

    path = os.environ.get("PYTHON_HISTORY")
    if not path or sys.version_info >= (3, 13):
        return

    def register_readline():
        import atexit

        try:
            import readline
            import rlcompleter
        except ImportError:
            return
        readline.set_completer(rlcompleter.Completer().complete)  # tab completion, as site sets up
        readline.parse_and_bind("tab: complete")
        try:
            readline.read_init_file()
        except OSError:
            pass
        try:
            readline.read_history_file(path)
        except OSError:
            pass

        def write_history():
            try:
                readline.write_history_file(path)
            except OSError:
                pass

        atexit.register(write_history)

    sys.__interactivehook__ = register_readline


_nsshell_keep_history_in_vault()
del _nsshell_keep_history_in_vault

import os as _nsshell_os

if _nsshell_os.environ.get("NSSHELL_OUTER_PYTHONSTARTUP"):
    with open(_nsshell_os.environ["NSSHELL_OUTER_PYTHONSTARTUP"], encoding="utf-8") as _nsshell_file:
        exec(compile(_nsshell_file.read(), _nsshell_file.name, "exec"))
    del _nsshell_file
del _nsshell_os
