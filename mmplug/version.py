"""mmplug's version, in one place: the package build and ``mmplug.__version__`` read it here."""

__version__ = "0.1.0"
