"""The ``mmplug`` command: plugins load first, then the command line is parsed and run.

Plugins load before parsing because they may add commands (``register_commands``, as
``mmplug demo`` of mmplug-demo does). Every command gets the one loaded host as
``args.host``; it is also the process-wide :func:`~mmplug.plugins.loading.default_host`
while the command runs, so that plugins load, and their failures are reported, once.

Exit codes: 0 success; 2 a user error (unknown name, invalid config, bad arguments, a broken
plugin in strict mode), printed as one message without a traceback. Anything else is a bug
and keeps its traceback. ``MMPLUG_DEBUG=1`` shows tracebacks for user errors too.
"""

from __future__ import annotations

import argparse
import sys
import typing
import warnings
from collections.abc import Sequence

from mmplug.cli.features import add_feature_commands
from mmplug.cli.listing import add_listing_commands
from mmplug.cli.running import add_running_commands
from mmplug.errors import MmplugError, MmplugWarning
from mmplug.plugins.host import PluginHost
from mmplug.plugins.loading import as_default_host, env_flag
from mmplug.plugins.snapshot import load_plugins_cached
from mmplug.version import __version__

USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    warnings.showwarning = _show_warning
    try:
        host = load_plugins_cached()
        parser, problems = build_parser(host)
        args, extra = parser.parse_known_args(argv)
        if extra and not hasattr(args, "extra"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.extra = extra
        args.host = host
        if not getattr(args, "reports_plugins", False):
            for record in host.failures:
                warn(f"{record.failure()}; see 'mmplug plugins'")
        for problem in host.problems + problems:
            warn(problem)
        with as_default_host(host):  # the public functions a plugin may call use it too
            result: int = args.run(args)
        return result
    except MmplugError as exc:
        if env_flag("MMPLUG_DEBUG"):
            raise
        print(f"mmplug: error: {exc}", file=sys.stderr)
        return USER_ERROR
    except BrokenPipeError:
        # `mmplug list | head`: the reader left; nothing more to say.
        sys.stderr.close()
        return 0


def build_parser(host: PluginHost) -> tuple[argparse.ArgumentParser, list[str]]:
    """The argument parser: core's commands, then those the loaded plugins add.

    Returns:
        The parser, and one line per plugin whose commands were left out.
    """
    parser = argparse.ArgumentParser(
        prog="mmplug", description="Multimodal models assembled from named, pluggable parts."
    )
    parser.add_argument("--version", action="version", version=f"mmplug {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_listing_commands(commands)
    add_running_commands(commands)
    add_feature_commands(commands)
    return parser, host.add_commands(commands)


def warn(message: str) -> None:
    """``mmplug: warning: ...`` on stderr."""
    print(f"mmplug: warning: {message}", file=sys.stderr)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: typing.TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our own warnings as ``mmplug: warning: ...``; others as Python prints them."""
    if issubclass(category, MmplugWarning):
        warn(str(message))
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr)
