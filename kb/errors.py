"""The knowledge base's own errors. kb knows nothing of the appliance; the CLI maps KBError to exit code 1."""


class KBError(Exception):
    """A clear, one-line problem the user can act on (unknown path, incompatible embedder, ...)."""


class ReadError(KBError):
    """One file cannot be read (corrupt, encrypted, binary, too large ...). The batch goes on without it."""
