"""Project exceptions. Each names what was wrong and what was expected.

The CLI maps these to one line on stderr and an exit code; any other exception is a bug and is
shown with its traceback.
"""

from __future__ import annotations


class VlnceError(Exception):
    """Base class of every error the user can cause and fix."""

    exit_code = 1


class ConfigError(VlnceError):
    """A configuration value is missing, of the wrong type or out of range."""

    exit_code = 2


class SceneError(VlnceError):
    """A scene file is missing, unreadable or unusable (e.g. it has no floor)."""


class NavigationError(VlnceError):
    """A pose or point is not on the navigable area, or no path exists where one is required."""


class DatasetError(VlnceError):
    """An episode file or field does not follow the expected schema."""


class CheckpointError(VlnceError):
    """A checkpoint is missing, corrupt or does not match the model."""


class UnknownNameError(VlnceError, KeyError):
    """A name looked up in a registry is not registered."""

    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(VlnceError, ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""


class TrainingError(VlnceError):
    """Training cannot go on (e.g. the loss became NaN); the last good checkpoint is kept."""
