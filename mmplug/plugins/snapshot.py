"""The registry snapshot: what loading the installed plugins produced, kept per environment.

Loading a plugin costs about a millisecond (importing its entry-point module, building its
params models, pluggy, the hooks); with fifty plugins that is most of what ``mmplug list``
takes. :func:`load_plugins_cached` loads them once, writes what the load produced (each
plugin's record and, for a loaded one, its components, with factories and params models as
``"module:qualname"`` paths) to one JSON file per Python environment, and then builds the
same host from that file for as long as nothing it depends on has changed. Like napari's npe2
manifests, the snapshot lists and describes components (``mmplug list``, ``info``) without
importing the plugins that register them, or pydantic: ``spec.params`` imports the module
defining a params model when something reads it (validation, building).

What is restored and what still loads:

- a loaded plugin is restored from the snapshot, unless it implements ``register_commands``
  (the command line needs the hook itself) or registered something the snapshot can't name
  (a factory or params model that no ``module:qualname`` path imports back);
- a plugin that failed or is incompatible loads again every time, so that its failure is
  reported exactly as without the snapshot (and is fatal with ``MMPLUG_STRICT_PLUGINS``);
- disabled and unselected plugins are restored as such.

The snapshot is used only while its fingerprint still matches: mmplug's version, the
interpreter, ``sys.path``, ``MMPLUG_LOAD_PLUGINS`` and ``MMPLUG_DISABLE_PLUGINS``, the name
of every ``*.dist-info``, ``*.egg-info`` and ``*.egg`` on ``sys.path`` with the stat (mtime,
size, inode) of its ``entry_points.txt`` and ``METADATA``/``PKG-INFO`` (installing, upgrading
or removing any distribution changes it), and the stat of every module file the plugins
imported while they loaded, core's own modules included (editing an editable plugin changes
it). A snapshot that can't be read, written or trusted is ignored without a word: it is only
ever a shortcut to what :func:`~mmplug.plugins.loading.load_plugins` returns.

Environment:
    MMPLUG_CACHE_DIR: where the snapshot files go (default the user cache folder:
        ``$XDG_CACHE_HOME/mmplug``, else ``~/.cache/mmplug`` on Linux).
    MMPLUG_NO_CACHE: ``1`` to load every plugin afresh, reading and writing no snapshot.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmplug.errors import DuplicateComponentError, PluginLoadError
from mmplug.files import default_cache_root
from mmplug.plugins.host import FAILED_STATUSES, PluginHost, PluginRecord, import_target
from mmplug.plugins.loading import env_flag, load_plugins
from mmplug.plugins.registry import ComponentSpec
from mmplug.version import __version__

#: Bumped whenever what a snapshot holds, or what it means, changes.
FORMAT = 2

#: The settings that change which plugins load. ``MMPLUG_STRICT_PLUGINS`` is not one: it only
#: changes what a failure does, and failed plugins always load afresh.
SETTINGS = ("MMPLUG_LOAD_PLUGINS", "MMPLUG_DISABLE_PLUGINS")

Stat = list[int] | None


def load_plugins_cached(environ: Mapping[str, str] | None = None) -> PluginHost:
    """What :func:`~mmplug.plugins.loading.load_plugins` returns, from the snapshot if it is
    still valid; otherwise load afresh and write the snapshot for next time.

    Args:
        environ: where to read the ``MMPLUG_*`` settings (default ``os.environ``).

    Raises:
        PluginLoadError: a plugin failed and ``MMPLUG_STRICT_PLUGINS`` is set.
    """
    env = os.environ if environ is None else environ
    if env_flag("MMPLUG_NO_CACHE", env):
        return load_plugins(environ=env)
    path = snapshot_path(env)
    key = fingerprint(env)  # before loading: a change during the load makes it stale at once
    host = restore(read_snapshot(path), key, strict=env_flag("MMPLUG_STRICT_PLUGINS", env))
    if host is not None:
        return host
    imported = set(sys.modules)
    host = load_plugins(environ=env)
    write_snapshot(path, capture(host, key, new_modules=set(sys.modules) - imported))
    return host


def snapshot_path(environ: Mapping[str, str]) -> Path:
    """The snapshot file of this interpreter's environment (one per ``sys.prefix``)."""
    key = hashlib.sha256(f"{sys.executable}\0{sys.prefix}".encode()).hexdigest()[:16]
    return default_cache_root(environ) / f"plugins-{key}.json"


def fingerprint(environ: Mapping[str, str]) -> str:
    """A digest of what decides which plugins exist and load, short of their module files."""
    path = [entry or os.getcwd() for entry in sys.path]
    state = {
        "format": FORMAT,
        "mmplug": __version__,
        "python": [sys.executable, sys.prefix, sys.version],
        "settings": [environ.get(name) for name in SETTINGS],
        "path": path,
        "distributions": [_distributions(entry) for entry in path],
    }
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()


def _distributions(entry: str) -> list[Any] | Stat:
    """The metadata folders in one ``sys.path`` entry and the stats of the files discovery
    reads in them; a zip or missing entry is its own stat."""
    try:
        scan = os.scandir(entry)
    except OSError:
        return _stat(entry)
    found = []
    with scan:
        for item in scan:
            suffix = os.path.splitext(item.name)[1].lower()
            if suffix in (".dist-info", ".egg-info", ".egg"):
                metadata = "METADATA" if suffix == ".dist-info" else "PKG-INFO"
                found.append(
                    [
                        item.name,
                        _stat(os.path.join(item.path, "entry_points.txt")),
                        _stat(os.path.join(item.path, metadata)),
                    ]
                )
    return sorted(found)


def _stat(path: str) -> Stat:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_mtime_ns, stat.st_size, stat.st_ino]


# -- writing ---------------------------------------------------------------------------------


def capture(host: PluginHost, key: str, *, new_modules: Iterable[str] = ()) -> dict[str, Any]:
    """The snapshot of a freshly loaded host.

    Args:
        host: what :func:`~mmplug.plugins.loading.load_plugins` returned.
        key: the :func:`fingerprint` taken before it loaded.
        new_modules: the modules imported while it loaded; their files are watched.
    """
    with_commands = {
        impl.plugin_name for impl in host.manager.hook.register_commands.get_hookimpls()
    }
    ids = [record.plugin_id for record in host.records]
    specs: dict[str, list[ComponentSpec]] = {}
    for spec in host.registry.components():
        specs.setdefault(spec.plugin, []).append(spec)
    plugins = []
    modules = set(new_modules)
    for record in host.records:
        entry: dict[str, Any] = {
            "name": record.name,
            "distribution": record.distribution,
            "version": record.version,
            "module": record.module,
            "status": record.status,
        }
        components = None
        if (
            record.status == "loaded"
            and record.plugin_id not in with_commands
            and ids.count(record.plugin_id) == 1  # a second one fails on the first's id
            and (record.api_version is None or type(record.api_version) is int)
        ):
            components = _components(specs.get(record.plugin_id, []))
        if components is not None:
            entry |= {"api_version": record.api_version, "components": components}
            top = record.module.partition(":")[0].split(".")[0]
            modules |= {m for m in sys.modules if m == top or m.startswith(f"{top}.")}
            modules |= {c[field].partition(":")[0] for c in components for field in _PATHS}
        plugins.append(entry)
    files = {}
    for name in sorted(modules):
        file = getattr(sys.modules.get(name), "__file__", None)
        if isinstance(file, str):
            files[file] = _stat(file)
    return {
        "format": FORMAT,
        "fingerprint": key,
        "files": files,
        "problems": list(host.problems),
        "plugins": plugins,
    }


#: The fields of a component that are ``"module:qualname"`` paths.
_PATHS = ("factory", "params")


def _components(specs: list[ComponentSpec]) -> list[dict[str, Any]] | None:
    """One plugin's components in JSON; None if a factory or params model has no path."""
    components = []
    for spec in specs:
        factory = spec.factory if isinstance(spec.factory, str) else _import_path(spec.factory)
        params = _import_path(spec.params)
        if factory is None or params is None:
            return None
        try:
            rows = spec.param_rows()
        except Exception:  # an annotation describe_params can't read: info will say so
            return None
        components.append(
            {
                "kind": spec.kind,
                "name": spec.name,
                "factory": factory,
                "params": params,
                "param_rows": rows,
                "summary": spec.summary,
                "modality": spec.modality,
            }
        )
    return components


def _import_path(obj: object) -> str | None:
    """``"module:qualname"`` if importing it gives back ``obj`` itself, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return None
    found: Any = sys.modules.get(module)
    for attr in qualname.split("."):
        found = getattr(found, attr, None)
    return f"{module}:{qualname}" if found is obj else None


def write_snapshot(path: Path, snapshot: dict[str, Any]) -> None:
    """Write atomically (a reader sees the old file or the new one); failing is no error."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, staging = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(snapshot, file)
        os.replace(staging, path)
    except (OSError, TypeError, ValueError):
        with contextlib.suppress(OSError):
            os.unlink(staging)


# -- reading ---------------------------------------------------------------------------------


def read_snapshot(path: Path) -> Any:
    """The snapshot's JSON, or None if there is none or it isn't JSON."""
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (OSError, ValueError):
        return None


def restore(snapshot: Any, key: str, *, strict: bool = False) -> PluginHost | None:
    """The host a snapshot describes, or None unless it is a valid one for ``key``.

    Plugins that the snapshot doesn't restore (failed ones, those with commands) load as
    :func:`~mmplug.plugins.loading.load_plugins` loads them, in their place in the order.
    """
    plan = _plan(snapshot, key)
    if plan is None or (strict and snapshot["problems"]):
        return None  # in strict mode, loading afresh decides which problems are fatal
    host = PluginHost(strict=strict)
    host.problems += snapshot["problems"]
    for record, specs in plan:
        if record.status != "loaded" and record.status not in FAILED_STATUSES:
            host.skip(
                name=record.name,
                distribution=record.distribution,
                version=record.version,
                module=record.module,
                status=record.status,
            )
        elif specs is None:
            host.add_module(
                record.module,
                name=record.name,
                distribution=record.distribution,
                version=record.version,
            )
        else:
            host.records.append(record)
            try:
                for spec in specs:
                    host.registry.add(spec)
            except DuplicateComponentError:
                return None  # a plugin loaded afresh registered something else this time
    return host


def _plan(snapshot: Any, key: str) -> list[tuple[PluginRecord, list[ComponentSpec] | None]] | None:
    """Each plugin's record and, if it is restored, its components; None if the snapshot is
    for another fingerprint, watches a file that has changed, or is not one at all."""
    try:
        if snapshot["format"] != FORMAT or snapshot["fingerprint"] != key:
            return None
        if not all(isinstance(line, str) for line in list(snapshot["problems"])):
            return None
        if any(_stat(file) != stat for file, stat in snapshot["files"].items()):
            return None
        plan = []
        for entry in snapshot["plugins"]:
            record = PluginRecord(
                name=entry["name"],
                distribution=entry["distribution"],
                version=entry["version"],
                module=entry["module"],
                status=entry["status"],
            )
            specs = None
            if "components" in entry:
                record.api_version = entry["api_version"]
                specs = [_spec(c, record) for c in entry["components"]]
                record.components = [f"{spec.kind}:{spec.name}" for spec in specs]
            plan.append((record, specs))
        return plan
    except (KeyError, TypeError, AttributeError, ValueError):
        return None  # not a snapshot this version wrote


def _spec(component: dict[str, Any], record: PluginRecord) -> ComponentSpec:
    if not isinstance(component["param_rows"], list):
        raise TypeError("param_rows")
    return CachedSpec(
        params_path=component["params"],
        rows=component["param_rows"],
        kind=component["kind"],
        name=component["name"],
        factory=component["factory"],
        summary=component["summary"],
        modality=component["modality"],
        distribution=record.distribution,
        version=record.version,
        plugin=record.plugin_id,
    )


class CachedSpec(ComponentSpec):
    """A component restored from the snapshot, whose params model is imported on first use.

    Listing and describing (``mmplug list``, ``info``) read only what the snapshot holds, so
    they import no plugin and not pydantic; reading ``params`` (validating, building) imports
    the module that defines the model (one plugin's), and from then on the spec is the same
    as one a fresh load registers.
    """

    _params_path: str
    _rows: list[dict[str, Any]]

    def __init__(self, *, params_path: str, rows: list[dict[str, Any]], **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)  # frozen, as every ComponentSpec
        object.__setattr__(self, "_params_path", params_path)
        object.__setattr__(self, "_rows", rows)

    def param_rows(self) -> list[dict[str, Any]]:
        """What :meth:`ComponentSpec.param_rows` gave when the snapshot was written (the
        modules defining the params models are among the files it watches)."""
        return copy.deepcopy(self._rows)

    def __getattr__(self, name: str) -> Any:
        # Python asks here only for attributes that are not set: `params`, until first read.
        if name != "params" or "_params_path" not in self.__dict__:
            raise AttributeError(name)
        try:
            params = import_target(self._params_path)
        except Exception as exc:
            raise PluginLoadError(
                f"{self.kind} {self.name!r} ({self.distribution} {self.version}): its params "
                f"model {self._params_path!r} no longer imports ({type(exc).__name__}: {exc}); "
                "run again with MMPLUG_NO_CACHE=1"
            ) from exc
        object.__setattr__(self, "params", params)
        return params
