"""Errors that mean "the input the user gave cannot be used" (as opposed to a bug): the CLI prints them as one line
and exits with code 2. Readers raise subclasses so that callers can catch them without importing the reader."""
from __future__ import annotations


class UserInputError(RuntimeError):
    """Bad or unreadable input (a bag, a dataset folder, a map): the message says which file and why."""
