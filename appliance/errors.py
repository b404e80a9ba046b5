"""Errors a user can cause or fix, each with the exit code scripts rely on.

0 ok, 1 failure, 2 usage, 3 integrity check failed, 4 refused by one of the owner's rules (rules.toml). Anything
that is not an ApplianceError is a bug and is allowed to raise with a traceback.
"""

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_REFUSED = 4


class ApplianceError(Exception):
    """A clear, one-line problem the user can act on."""

    exit_code = EXIT_FAILURE


class UsageError(ApplianceError):
    exit_code = EXIT_USAGE


class IntegrityError(ApplianceError):
    """A file does not match its manifest: wrong hash, wrong size, bad signature. Never loaded."""

    exit_code = EXIT_INTEGRITY


class RuleRefusal(ApplianceError):
    """One of the owner's rules (rules.toml) refused the question, a passage or the answer: the owner's message,
    naming the rule. `decision` is the appliance.answering.rules.Decision (every rule that matched, and why)."""

    exit_code = EXIT_REFUSED

    def __init__(self, message: str, *, rule: str, decision=None):
        super().__init__(message)
        self.rule = rule
        self.decision = decision


class ConfirmationNeeded(RuleRefusal):
    """A rule with action "confirm" matched the question and nobody could be asked (Conversation.ask's `confirm`)."""


class ModelNotFound(ApplianceError):
    pass


class NotEnoughMemory(ApplianceError):
    pass


class DataDirError(ApplianceError):
    pass


class EngineError(ApplianceError):
    """The engine process reported a problem (a template refused, a prompt too long, a failed decode)."""

    def __init__(self, message: str, *, kind: str = "", details: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.details = details or {}


class EngineCrashed(EngineError):
    """The engine process died (a signal, the OOM killer) or hung and was stopped. Nothing else is affected."""

    def __init__(self, message: str, *, signal_name: str = "", stage: str = ""):
        super().__init__(message, kind="crash")
        self.signal_name = signal_name
        self.stage = stage
