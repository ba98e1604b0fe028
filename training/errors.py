"""The problems a user of ``training`` can fix, one class each, defined once.

Library code (config, data, train, evaluation, rewards, export) raises these and never anything
CLI-specific; ``training.cli`` maps them to one line on stderr and an exit code
(georeasoner_plugin.core.exit_codes). Each message already says what to do next.
"""
from __future__ import annotations


class TrainingError(Exception):
    """Base of every problem a user of the training package can fix."""


class ConfigError(TrainingError, ValueError):
    """A training configuration the user has to fix; the message names the file and the key."""


class DatasetError(TrainingError, ValueError):
    """A dataset that cannot be used: an EarthReason root or split laid out wrongly, a prepared
    JSON-lines file missing or without one usable record."""


class OptionError(TrainingError, ValueError):
    """A bad command-line value or input file of a training command (evaluate, rewards, prepare)."""


class ExportError(TrainingError, ValueError):
    """A run folder that cannot be exported as a standalone model."""
