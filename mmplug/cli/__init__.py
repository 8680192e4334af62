"""The ``mmplug`` command line: parsing and plugin commands (``main``), the commands that read
the registry (``listing``, with ``params`` for how params are shown) and those that train and
use models (``running``)."""

from mmplug.cli.main import main

__all__ = ["main"]
