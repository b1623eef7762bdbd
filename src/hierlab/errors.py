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
