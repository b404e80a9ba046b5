"""The knowledge base's own errors. kb knows nothing of the appliance; the CLI maps KBError to exit code 1 and
KBUsageError to exit code 2."""


class KBError(Exception):
    """A clear, one-line problem the user can act on (unknown path, incompatible embedder, ...).

    The message is made one line whatever it quotes (a parser's message can hold newlines)."""

    def __init__(self, message: object = ""):
        super().__init__(" ".join(str(message).split()))


class KBUsageError(KBError):
    """The request itself is wrong (an empty path, removing everything under / or the home directory)."""


class ReadError(KBError):
    """One file cannot be read (corrupt, encrypted, binary, not a regular file ...). The batch goes on without it."""


class StoreDamaged(KBError):
    """The library's own store (text.sqlite) is damaged or is not one: an integrity failure, not repairable in place."""


class DiskFull(KBError):
    """No room to write: the batch stops cleanly and the library stays at its last consistent state."""


class VectorIndexError(KBError):
    """The vector index (chroma) failed or is damaged; it can be rebuilt from the library's own store."""
