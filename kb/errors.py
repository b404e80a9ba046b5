"""The knowledge base's own errors. kb knows nothing of the appliance; the CLI maps KBError to exit code 1."""

from contextlib import contextmanager


class KBError(Exception):
    """A clear, one-line problem the user can act on (unknown path, incompatible embedder, ...)."""


class ReadError(KBError):
    """One file cannot be read (corrupt, encrypted, binary, too large ...). The batch goes on without it."""


@contextmanager
def file_errors():
    """Turn what the file system says about one file into the ReadError line the ingest summary shows."""
    try:
        yield
    except FileNotFoundError:
        raise ReadError("vanished before it could be read") from None
    except IsADirectoryError:
        raise ReadError("not a regular file") from None
    except PermissionError:
        raise ReadError("permission denied") from None
