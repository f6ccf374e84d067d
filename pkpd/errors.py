"""Exceptions raised by pkpd.

Every error a user can cause by bad input derives from :class:`PkpdError`; the CLI
catches it, prints the message and exits with status 2 (no traceback).
"""

from __future__ import annotations


class PkpdError(Exception):
    """Base class for errors caused by user input (data, arguments, model cards)."""


class DatasetError(PkpdError):
    """A dataset could not be read or failed validation.

    Attributes
    ----------
    violations : list
        The :class:`pkpd.validation.Violation` records behind the error (may be empty).
    """

    def __init__(self, message: str, violations=None):
        super().__init__(message)
        self.violations = list(violations or [])


class ModelError(PkpdError):
    """A model, model card or parameter set is malformed or inconsistent."""
