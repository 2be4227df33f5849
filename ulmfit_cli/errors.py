"""The one exception type for bad user input: the CLI prints its message and exits 2."""


class UlmfitError(Exception):
    """A problem with the user's input (file, config key, column, run dir).

    The message must name what is wrong and where; the CLI shows it without a traceback.
    """
