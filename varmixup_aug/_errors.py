"""The one exception type the package raises for bad input."""


class VarMixupError(ValueError):
    """Raised for invalid arguments, batches, datasets and checkpoints.

    It subclasses :class:`ValueError`, so code that already catches ``ValueError``
    keeps working.
    """
