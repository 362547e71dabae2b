"""The error hierarchy of cdranon.

Every message says what went wrong, where, and how to fix it. No message ever contains a data
value from an input file: only file names, column names, counts and codes.
"""

from __future__ import annotations

import errno as _errno
import gzip
import os
import re
import unicodedata
import zlib
from typing import Any


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

    def __init__(
        self,
        message: str,
        *,
        bad_encoding: bool = False,
        io_error: bool = False,
        date_order: str | None = None,
    ) -> None:
        super().__init__(message)
        self.bad_encoding = bad_encoding
        self.date_order = date_order  # read the file again with this slash-date order
        # The operating system failed the read: the same file may read fine on the next run, so
        # the ledger does not record the refusal.
        self.io_error = io_error


class PublishError(CdranonError):
    """Staged outputs could not be published."""


class RunRefused(CdranonError):
    """The run refused to start (the output root is busy or unusable); it read and wrote nothing."""


class StorageError(CdranonError):
    """The operating system refused a read or a write of the run (a full disk, a read-only
    folder, a path that is a file); the message names the path and the fix."""


class NotPublished(CdranonError):
    """The run ended without publishing (nothing to publish, or the gate refused); ``summary`` is
    the run's summary (counts and paths, never a value)."""

    def __init__(self, reason: str, summary: dict) -> None:
        super().__init__(reason)
        self.summary = summary


class LeakDetected(CdranonError):
    """The privacy gate found Personal Data in an output; nothing was published."""


# OS errors a retry may cure: the storage may answer on the next attempt (a network share, a
# timeout). A missing file, a permission problem or a corrupt archive will not change by itself.
_TRANSIENT_NAMES = ("ETIMEDOUT", "EAGAIN", "EINTR", "ECONNRESET", "ECONNABORTED", "ENETUNREACH",
                    "EHOSTUNREACH", "ESTALE", "EBUSY")  # fmt: skip
_TRANSIENT_ERRNOS = frozenset(getattr(_errno, n) for n in _TRANSIENT_NAMES if hasattr(_errno, n))


def is_transient(exc: BaseException) -> bool:
    """Whether a read failed in a way a retry may cure (by type and errno, never by message).

    >>> is_transient(TimeoutError()), is_transient(FileNotFoundError(2, "gone"))
    (True, False)
    """
    if isinstance(exc, TimeoutError | ConnectionError | InterruptedError | BlockingIOError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


def read_failure(exc: BaseException, *, whole: bool = False) -> InputError:
    """The InputError of a read that raised ``exc``: transient, an I/O failure (the file may read
    again later: a vanished or locked file, a share that went away) or a content problem (a
    corrupt archive: ``EOFError``, ``zlib.error``, ``gzip.BadGzipFile``).

    ``whole``: the file broke after its first part was read.
    """
    what = "the file could not be read to its end" if whole else "cannot read the file"
    corrupt = isinstance(exc, zlib.error | gzip.BadGzipFile)
    message = f"{what} ({'corrupt gzip data' if corrupt else type(exc).__name__})"
    if is_transient(exc):
        return TransientReadError(message)
    io = isinstance(exc, OSError) and not isinstance(exc, gzip.BadGzipFile)
    return InputError(message, io_error=io)


class TransientReadError(InputError):
    """A read failed in a way a retry may cure (see ``is_transient``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, io_error=True)


_FIXES = {
    "ENOSPC": "free space on that disk (or point --out elsewhere) and run again",
    "EDQUOT": "free space within the quota (or point --out elsewhere) and run again",
    "EROFS": "the file system is read-only: point --out at a writable folder",
    "EACCES": "give the user that runs cdranon write access, or point --out elsewhere",
    "EPERM": "give the user that runs cdranon write access, or point --out elsewhere",
    "ENOTDIR": "a file stands where a folder must be: move it away or choose another path",
    "EEXIST": "a file stands where a folder must be: move it away or choose another path",
    "EISDIR": "a folder stands where a file must be: move it away",
    "ENOENT": "a folder disappeared during the run: check the storage and run again",
}


def describe_os_error(exc: OSError, doing: str = "write") -> str:
    """One line for an OSError: what failed, on which path, the system's words and the fix.

    >>> import errno
    >>> describe_os_error(OSError(errno.ENOSPC, "No space left on device", "/out/x.parquet"))
    'cannot write /out/x.parquet: No space left on device (ENOSPC); free space on that disk (or point --out elsewhere) and run again'
    """  # noqa: E501
    name = _errno.errorcode.get(exc.errno or 0, type(exc).__name__)
    words = os.strerror(exc.errno) if exc.errno else type(exc).__name__
    where = f" {safe_text(str(exc.filename))}" if exc.filename else ""
    fix = _FIXES.get(name, "check the storage and permissions, then run again")
    return f"cannot {doing}{where}: {words} ({name}); {fix}"


def safe_text(text: str, limit: int = 300) -> str:
    r"""Text that is safe on a console, in a log and in a manifest: control and bidirectional
    characters escaped (a file name cannot forge a log line or reverse a name), and capped.

    >>> safe_text("a\nb\u202ec")
    'a\\nb\\u202ec'
    >>> len(safe_text("x" * 5000))
    300
    """
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch.encode("unicode_escape").decode("ascii"))
        else:
            out.append(ch)
    joined = "".join(out)
    return joined if len(joined) <= limit else joined[: limit - 1] + "…"


# How the command line names what RunParams calls a field, for errors in the user's words.
OPTION_NAMES = {
    "landing": "--landing", "out": "--out", "policy": "--policy", "release": "--release",
    "sources": "--source", "regions": "--region", "date_from": "--from", "date_to": "--to",
}  # fmt: skip


def describe_validation(exc: Any, names: dict[str, str] = OPTION_NAMES) -> str:
    """A pydantic ValidationError as the user would say it: the option, the value's place in a
    repeated option, and the message without pydantic's prefixes (never the value itself).

    >>> from pydantic import ValidationError
    >>> from anonymize.run import RunParams
    >>> try:
    ...     RunParams(landing=".", out=".", date_from="2026-11-24", date_to="2026-11-23")
    ... except ValidationError as exc:
    ...     print(describe_validation(exc))
    --from is after --to
    """
    problems = []
    for e in exc.errors():
        loc = [str(part) for part in e["loc"]]
        where = names.get(loc[0], loc[0]) if loc else ""
        if len(loc) > 1 and loc[1].isdigit():
            where += f" (value {int(loc[1]) + 1})"
        msg = re.sub(r"^(Value|Assertion) error, ", "", e["msg"])
        if e["type"] == "string_pattern_mismatch" and loc and loc[0] == "regions":
            msg = "a region is an upper-case word (letters, digits, _) of the policy"
        elif e["type"].startswith(("date_", "datetime_")):
            msg = "a day is written YYYY-MM-DD"
        msg = msg[0].lower() + msg[1:] if msg else msg
        for field, option in names.items():
            msg = re.sub(rf"\b{field}\b", option, msg)
        if e["type"] == "value_error" and not loc:
            problems.append(msg)
        else:
            problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)
