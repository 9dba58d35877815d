"""Exceptions the package raises on purpose (each message says what to do)."""


class NonFiniteError(ValueError):
    """A vector to be encoded holds NaN or Inf; encoding it would send garbage bits."""
