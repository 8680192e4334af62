"""Plugin discovery and loading: entry points in, a filled :class:`PluginHost` out.

:func:`load_plugins` adds core's default plugin modules first, then every entry point in the
``mmplug`` group (sorted, selected by the environment), to a fresh
:class:`~mmplug.plugins.host.PluginHost`, which isolates each plugin's failures.
``MMPLUG_STRICT_PLUGINS=1`` makes the first failure fatal.

Environment:
    MMPLUG_LOAD_PLUGINS: comma-separated distributions (or entry-point names) to load; set
        but empty loads none. Core's own components always load.
    MMPLUG_DISABLE_PLUGINS: comma-separated distributions (or entry-point names) to skip.
        A name in either that no installed plugin has is a problem the host records (with a
        close match), not silence.
    MMPLUG_STRICT_PLUGINS: ``1`` to raise :class:`PluginLoadError` on the first failure.
    MMPLUG_CACHE_DIR, MMPLUG_NO_CACHE: where the ``mmplug`` command keeps its registry
        snapshot, and ``1`` to turn it off (see :mod:`mmplug.plugins.snapshot`).

Nothing here imports torch: loading plugins only imports their (cheap) entry-point modules.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmplug.errors import MmplugWarning, PluginLoadError, describe_exception
from mmplug.plugins.host import PluginHost
from mmplug.plugins.registry import Registry, normalize_distribution
from mmplug.version import __version__

if TYPE_CHECKING:
    # imported by discover(): 10 ms that a command served from the registry snapshot saves
    import importlib.metadata

ENTRY_POINT_GROUP = "mmplug"

#: Core's own components, registered through the same hooks as any plugin.
DEFAULT_PLUGINS: tuple[str, ...] = ("mmplug.plugins.builtin",)
CORE_DISTRIBUTION = "mmplug"


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether an on/off environment variable is on (``1``, ``true``, ``yes``, ``on``)."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class EntryPointPlugin:
    """An entry point in the ``mmplug`` group and the distribution that declares it."""

    name: str
    module: str
    distribution: str
    version: str


def discover(
    path: Sequence[str] | None = None, *, problems: list[str] | None = None
) -> list[EntryPointPlugin]:
    """Find every entry point in the ``mmplug`` group, without importing anything.

    Never raises for a damaged distribution (an ``entry_points.txt`` that can't be parsed):
    it is left out, so that it can't stop the ``mmplug`` command or a pytest session.

    Args:
        path: directories to search instead of ``sys.path`` (tests use fake distributions).
        problems: where to add one line per damaged distribution that declares plugins.

    Returns:
        One entry per entry point, sorted by distribution then name; a distribution found
        twice on the path counts once (the first wins, as imports do).
    """
    import importlib.metadata

    dists = (
        importlib.metadata.distributions(path=list(path))
        if path is not None
        else importlib.metadata.distributions()
    )
    seen: set[str] = set()
    found: list[EntryPointPlugin] = []
    for dist in dists:
        try:
            entry_points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
            dist_name = (dist.metadata["Name"] or "unknown") if entry_points else ""
        except Exception as exc:
            if problems is not None and _declares_plugins(dist):
                where = getattr(dist, "_path", None) or "a distribution"
                problems.append(
                    f"{where}: its entry points can't be read ({describe_exception(exc)}); "
                    "its plugins are not loaded"
                )
            continue
        if not entry_points:
            continue
        if normalize_distribution(dist_name) in seen:
            continue
        seen.add(normalize_distribution(dist_name))
        found += [
            # module[:attr] without any "[extras]" the entry point declares
            EntryPointPlugin(
                ep.name,
                f"{ep.module}:{ep.attr}" if ep.attr else ep.module,
                dist_name,
                dist.version or "0",
            )
            for ep in entry_points
        ]
    return sorted(found, key=lambda p: (normalize_distribution(p.distribution), p.name))


def _declares_plugins(dist: importlib.metadata.Distribution) -> bool:
    """Whether a distribution whose entry points can't be parsed has some in our group
    (else its damage is someone else's concern)."""
    try:
        return f"[{ENTRY_POINT_GROUP}]" in (dist.read_text("entry_points.txt") or "")
    except Exception:  # not even text: say so rather than guess
        return True


def _parts(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {normalize_distribution(part) for part in _parts(value)}


def _unknown_names(environ: Mapping[str, str], plugins: Sequence[EntryPointPlugin]) -> list[str]:
    """One line per name that MMPLUG_LOAD_PLUGINS or MMPLUG_DISABLE_PLUGINS gives and no
    installed plugin has: a typo would otherwise select, or skip, nothing without a word."""
    known = {CORE_DISTRIBUTION: CORE_DISTRIBUTION}
    for plugin in plugins:
        known.setdefault(normalize_distribution(plugin.distribution), plugin.distribution)
        known.setdefault(normalize_distribution(plugin.name), plugin.name)
    problems = []
    for variable in ("MMPLUG_LOAD_PLUGINS", "MMPLUG_DISABLE_PLUGINS"):
        given: dict[str, str] = {}  # each name once, as first spelt
        for name in _parts(environ.get(variable, "")):
            given.setdefault(normalize_distribution(name), name)
        for normal, name in given.items():
            if normal in known:
                continue
            close = difflib.get_close_matches(normal, known, n=1)
            hint = f" (did you mean {known[close[0]]}?)" if close else ""
            problems.append(f"{variable} names {name}, which is not an installed plugin{hint}")
    return problems


def _matches(plugin: EntryPointPlugin, names: set[str]) -> bool:
    return bool(
        {normalize_distribution(plugin.distribution), normalize_distribution(plugin.name)} & names
    )


def load_plugins(
    *,
    entry_points: bool = True,
    extra: Iterable[object] = (),
    path: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> PluginHost:
    """Load core's components, then the installed plugins, then ``extra`` plugin objects.

    Args:
        entry_points: discover installed plugins (tests turn this off).
        extra: plugin objects to add after discovery (modules or objects with hookimpls).
        path: where to look for distributions instead of ``sys.path``.
        environ: the environment to read ``MMPLUG_*`` settings from (default ``os.environ``).

    Returns:
        The host: a record per plugin, and in ``problems`` what went wrong that is no one
        plugin's (a name in ``MMPLUG_DISABLE_PLUGINS`` that is not installed).

    Raises:
        PluginLoadError: a plugin failed (or a distribution's entry points can't be read)
            and ``MMPLUG_STRICT_PLUGINS`` is set.
    """
    env = os.environ if environ is None else environ
    host = PluginHost(strict=env_flag("MMPLUG_STRICT_PLUGINS", env))
    for module_name in DEFAULT_PLUGINS:
        host.add_module(
            module_name, name=module_name, distribution=CORE_DISTRIBUTION, version=__version__
        )
    if entry_points:
        found = discover(path, problems=host.problems)
        if host.strict and host.problems:
            raise PluginLoadError(host.problems[0])
        host.problems += _unknown_names(env, found)
        selected = _names(env.get("MMPLUG_LOAD_PLUGINS"))
        disabled = _names(env.get("MMPLUG_DISABLE_PLUGINS")) or set()
        for plugin in found:
            status = None
            if _matches(plugin, disabled):
                status = "disabled"
            elif selected is not None and not _matches(plugin, selected):
                status = "not selected"
            if status:
                host.skip(
                    name=plugin.name,
                    distribution=plugin.distribution,
                    version=plugin.version,
                    module=plugin.module,
                    status=status,
                )
                continue
            host.add_module(
                plugin.module,
                name=plugin.name,
                distribution=plugin.distribution,
                version=plugin.version,
            )
    for plugin_object in extra:
        host.add(plugin_object)
    return host


_default_host: PluginHost | None = None


def default_host() -> PluginHost:
    """The process-wide plugins, loaded on first use from the installed distributions.

    Each plugin that fails, and each of the host's ``problems``, is reported once as an
    :class:`~mmplug.errors.MmplugWarning` (which the ``mmplug`` command prints as
    ``mmplug: warning: ...``). While a command of ``mmplug`` runs, this is the host it
    loaded (see :func:`as_default_host`).
    """
    global _default_host
    if _default_host is None:
        _default_host = load_plugins()
        for record in _default_host.failures:
            warnings.warn(f"{record.failure()}; it is not loaded", MmplugWarning, stacklevel=2)
        for problem in _default_host.problems:
            warnings.warn(problem, MmplugWarning, stacklevel=2)
    return _default_host


@contextlib.contextmanager
def as_default_host(host: PluginHost) -> Iterator[PluginHost]:
    """Make ``host`` what :func:`default_host` returns until the block ends.

    The ``mmplug`` command runs its commands in one, with the host it loaded and reported
    on: code that calls ``mmplug.train`` or ``mmplug.validate`` without a registry (a
    plugin's command, say) uses those plugins, instead of loading them, and warning about
    their failures, a second time.
    """
    global _default_host
    previous, _default_host = _default_host, host
    try:
        yield host
    finally:
        _default_host = previous


def default_registry() -> Registry:
    """The registry of :func:`default_host`."""
    return default_host().registry
