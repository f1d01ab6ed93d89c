"""Shared foundations of the stack: errors, registries, file helpers and the ``vlnce`` CLI.

Library packages (``sim``, ``perception``, ``agents``) import ``vlnce.errors``, ``vlnce.registry``,
``vlnce.fileio``, ``vlnce.torchio``, ``vlnce.tblog`` and ``vlnce.workers`` only; nothing outside ``vlnce.cli`` parses arguments or exits the process.
"""

__version__ = "0.1.0"
