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
