"""Exception types the CLI turns into a one-screen message instead of a traceback."""


class UlmfitError(Exception):
    """A problem with the user's input (file, config key, column, run dir): exit code 2.

    The message must name what is wrong and where; the CLI shows it without a traceback.
    """


class TrainingFailed(Exception):
    """Training went wrong after it started (a NaN/inf loss): exit code 3.

    Unlike bad input, the unfinished run and its last good checkpoint are kept for `--resume`.
    """


class Abandoned(Exception):
    """A run given up on purpose (a pruned `ulmfit tune` trial): its staging folder is removed quietly."""
