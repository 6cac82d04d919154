"""The one exception type a user may see: its text is a sentence that says what happened and what to do."""


class UserError(Exception):
    """A problem with the user's input (data, weights, settings), reported as one plain sentence."""


class ConfigError(UserError):
    """A configuration or project file that cannot be used."""


class ModelError(UserError):
    """A model name or weight source that cannot be used."""
