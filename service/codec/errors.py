"""Errors of the codec layer."""


class CodecError(Exception):
    """A payload that passed the schema but cannot become (or be written as) a tensor."""
