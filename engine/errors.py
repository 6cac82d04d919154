"""The one exception type a user may see: its text is a sentence that says what happened and what to do."""


class UserError(Exception):
    """A problem with the user's input (data, weights, settings), reported as one plain sentence."""


class ConfigError(UserError):
    """A configuration or project file that cannot be used."""


class ModelError(UserError):
    """A model name or weight source that cannot be used."""


class Stopped(UserError):
    """The work was stopped on request (the stop token was set: Stop in the window, Ctrl-C on the command line)."""


# The command line's exit status, one per outcome (main.py; said in `--help` and the README):
EXIT_COMPLETED = 0  # the command did what was asked
EXIT_FAILED = 1  # it failed: an unexpected problem, or a run that failed (its sentence says why)
EXIT_BAD_INPUT = 2  # the input cannot be used: a wrong option, a missing folder, a model name that does not exist...
EXIT_STOPPED = 3  # stopped on request (Ctrl-C): a stopped run keeps a checkpoint to resume from
EXIT_ABORTED = 130  # aborted at once by a second Ctrl-C (the shell's convention for an interrupt)
