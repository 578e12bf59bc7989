"""The errors a user can cause or fix without touching the code; the command line prints each in one line.

Every message names the problem and what to do about it. This module imports
nothing, so any layer of imalib may raise these errors.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the value and the choices."""


class DataError(RuntimeError):
    """A dataset is missing or malformed; the message says what to do."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used; the message says why and what to do."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "TrainingDiverged"]
