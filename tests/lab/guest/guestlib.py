"""Small helpers shared by the guest-side checks."""

from __future__ import annotations


class Unavailable(Exception):
    """The API a check needs has not landed yet; the host side reports the check as skipped."""
