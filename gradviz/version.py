"""gradviz's version, in one place (the package, the CLI and the record read it here)."""

__version__ = "0.1.0"
