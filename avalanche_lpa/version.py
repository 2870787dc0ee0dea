"""The package version, in a module of its own: every room may import it (results record it, the command line
prints it) without importing anything else of the package."""

__version__ = "0.1.0"
