"""The single source of ddbench's version (setup.cfg reads it with ``attr:``)."""

__version__ = "0.1.0"
