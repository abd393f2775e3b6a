"""The ``edgetvm`` command: one module per command group (``compile``, ``face``, ``tune``), the options they
share (``options``), and ``main``, which builds the parser from the groups and runs a command."""

from .main import main

__all__ = ["main"]
