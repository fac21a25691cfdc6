"""The one base of every error a user can act on: caught once by the CLI, printed as one line.

Each package defines its own subclasses next to the code that raises them (``ConfigError``
here, ``LayoutError``, ``CatalogError``, ``SpoolError``, ``DamagedFileError``, ``RangeError``,
``RestoreError``, ``BackupError``, ``SeaweedError``); ``launch.py`` prints any of them as
``error: <message>`` and exits with status 2. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class TickarchiveError(Exception):
    """An error whose message (one line) tells the user what is wrong and what to do."""


class ConfigError(TickarchiveError, ValueError):
    """Invalid configuration; the message is one line naming the problem and allowed values."""
