"""Errors a user can cause or fix, each with the exit code scripts rely on.

0 ok, 1 failure, 2 usage, 3 integrity check failed. Anything that is not an ApplianceError is a bug and is allowed
to raise with a traceback.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3


class ApplianceError(Exception):
    """A clear, one-line problem the user can act on."""

    exit_code = EXIT_FAILURE


class UsageError(ApplianceError):
    exit_code = EXIT_USAGE


class IntegrityError(ApplianceError):
    """A file does not match its manifest: wrong hash, wrong size, bad signature. Never loaded."""

    exit_code = EXIT_INTEGRITY


class ModelNotFound(ApplianceError):
    pass


class NotEnoughMemory(ApplianceError):
    pass


class DataDirError(ApplianceError):
    pass
