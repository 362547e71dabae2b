"""The error hierarchy of cdranon.

Every message says what went wrong, where, and how to fix it. No message ever contains a data
value from an input file: only file names, column names, counts and codes.
"""

from __future__ import annotations


class CdranonError(Exception):
    """Base class of every error cdranon raises on purpose."""


class PolicyError(CdranonError):
    """The policy cannot be used. ``problems`` lists every problem found, not only the first."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"policy {source} is refused ({len(self.problems)} problem(s)); "
            f"fix each and rerun:\n{lines}"
        )


class ContractError(CdranonError):
    """An input file does not match any contract, or breaks the one it matches."""


class KeyError_(CdranonError):  # noqa: N801 - the trailing underscore avoids the builtin KeyError
    """The master key is missing or unusable."""


class InputError(CdranonError):
    """An input file cannot be read at all (truncated archive, wrong format, unreadable)."""

    def __init__(self, message: str, *, bad_encoding: bool = False) -> None:
        super().__init__(message)
        self.bad_encoding = bad_encoding


class PublishError(CdranonError):
    """Staged outputs could not be published."""


class LeakDetected(CdranonError):
    """The privacy gate found Personal Data in an output; nothing was published."""


# Read failures worth retrying: the storage may answer on the next attempt (a network share, a
# timeout). A missing file, a permission problem or a corrupt archive will not change.
TRANSIENT_IO = ("OSError", "TimeoutError", "BlockingIOError", "InterruptedError",
                "ConnectionError", "ConnectionResetError", "BrokenPipeError")  # fmt: skip


def transient_read_failure(reason: str | None) -> bool:
    """Whether a file was refused for an I/O failure that a retry may cure.

    >>> transient_read_failure("cannot read the file (TimeoutError)")
    True
    >>> transient_read_failure("cannot read the file (BadGzipFile)")
    False
    """
    return (
        any(reason == f"cannot read the file ({name})" for name in TRANSIENT_IO)
        if reason
        else False
    )


class TransientReadError(InputError):
    """A read failed in a way a retry may cure (see ``transient_read_failure``)."""
