"""The error every room raises for bad input."""

from __future__ import annotations


class SpecError(ValueError):
    """Invalid job parameters; the message is one line a user can act on."""
