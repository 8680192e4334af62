"""Plugin discovery and loading: entry points in, a filled :class:`PluginHost` out.

:func:`load_plugins` adds core's default plugin modules first, then every entry point in the
``mmplug`` group (sorted, selected by the environment), to a fresh
:class:`~mmplug.plugins.host.PluginHost`, which isolates each plugin's failures.
``MMPLUG_STRICT_PLUGINS=1`` makes the first failure fatal.

Environment:
    MMPLUG_LOAD_PLUGINS: comma-separated distributions (or entry-point names) to load; set
        but empty loads none. Core's own components always load.
    MMPLUG_DISABLE_PLUGINS: comma-separated distributions (or entry-point names) to skip.
    MMPLUG_STRICT_PLUGINS: ``1`` to raise :class:`PluginLoadError` on the first failure.

Nothing here imports torch: loading plugins only imports their (cheap) entry-point modules.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mmplug.plugins.host import PluginHost
from mmplug.plugins.registry import Registry, normalize_distribution
from mmplug.version import __version__

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


def discover(path: Sequence[str] | None = None) -> list[EntryPointPlugin]:
    """Find every entry point in the ``mmplug`` group, without importing anything.

    Args:
        path: directories to search instead of ``sys.path`` (tests use fake distributions).

    Returns:
        One entry per entry point, sorted by distribution then name; a distribution found
        twice on the path counts once (the first wins, as imports do).
    """
    dists = (
        importlib.metadata.distributions(path=list(path))
        if path is not None
        else importlib.metadata.distributions()
    )
    seen: set[str] = set()
    found: list[EntryPointPlugin] = []
    for dist in dists:
        entry_points = [ep for ep in dist.entry_points if ep.group == ENTRY_POINT_GROUP]
        if not entry_points:
            continue
        dist_name = dist.metadata["Name"] or "unknown"
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


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {normalize_distribution(part.strip()) for part in value.split(",") if part.strip()}


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

    Raises:
        PluginLoadError: a plugin failed and ``MMPLUG_STRICT_PLUGINS`` is set.
    """
    env = os.environ if environ is None else environ
    host = PluginHost(strict=env_flag("MMPLUG_STRICT_PLUGINS", env))
    for module_name in DEFAULT_PLUGINS:
        host.add_module(
            module_name, name=module_name, distribution=CORE_DISTRIBUTION, version=__version__
        )
    if entry_points:
        selected = _names(env.get("MMPLUG_LOAD_PLUGINS"))
        disabled = _names(env.get("MMPLUG_DISABLE_PLUGINS")) or set()
        for plugin in discover(path):
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


@functools.cache
def default_host() -> PluginHost:
    """The process-wide plugins, loaded on first use from the installed distributions.

    A plugin that fails is reported once as a warning (and by ``mmplug plugins``).
    """
    host = load_plugins()
    for record in host.failures:
        warnings.warn(f"mmplug {record.failure()}; it is not loaded", stacklevel=2)
    return host


def default_registry() -> Registry:
    """The registry of :func:`default_host`."""
    return default_host().registry
