"""User-facing errors.

Every mistake a user can make (a bad config value, a missing file, a vocabulary that does
not fit a model) raises a :class:`HierlabError` whose message is one line naming the field
or path and what is expected. The CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations


class HierlabError(Exception):
    """Base class of every error that is the user's to fix."""


class ConfigError(HierlabError):
    """An invalid configuration: names the field and the allowed values."""


class DataError(HierlabError):
    """A missing, corrupt or inconsistent artefact (shard, manifest, checkpoint)."""


class DiskFullError(DataError):
    """A write ran out of space (ENOSPC): names the path and the bytes needed where known.
    Nothing partial is left under the final name, so a re-run after freeing space resumes."""


class LockedError(HierlabError):
    """Another live hierlab process is writing the same run folder."""


class Preempted(HierlabError):
    """A stage stopped on SIGTERM/SIGINT at a safe point; the message says where and how to
    resume. ``exit_code`` is the shell's convention for the signal (128 + its number)."""

    def __init__(self, message: str, signum: int = 15) -> None:
        super().__init__(message, signum)
        self.signum = signum

    def __str__(self) -> str:
        return str(self.args[0])

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 143 for SIGTERM, 130 for SIGINT."""
        return 128 + int(self.signum)
