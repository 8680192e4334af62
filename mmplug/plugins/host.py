"""A plugin host: one pluggy ``PluginManager("mmplug")``, the registry its plugins fill, and a
record of what happened to each plugin.

Each plugin is added on its own: imported, registered with pluggy, and its hooks called for
it alone, with a ``register`` callback that knows which distribution is calling. That is what
lets a failure stay with its plugin: an import error, a hook that raises (``SystemExit``
and any other ``BaseException`` included; only ``KeyboardInterrupt`` goes through) or a
contract violation marks that plugin failed, rolls back whatever it had registered, and every
other plugin still loads. In strict mode the first failure raises :class:`PluginLoadError`.
Which plugins are added, and in what order, is :mod:`mmplug.plugins.loading`'s business.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any

import pluggy

from mmplug.errors import PluginLoadError, describe_exception
from mmplug.plugins import hookspecs
from mmplug.plugins.registry import Registry

#: Statuses of plugins that should have loaded and did not.
FAILED_STATUSES = ("failed", "incompatible")


@dataclass
class PluginRecord:
    """What happened to one plugin.

    Attributes:
        name: the entry-point name (``text``) or, for core, the module name.
        distribution: the distribution that provides it (``mmplug-text``).
        version: that distribution's version.
        module: the module the entry point names.
        status: ``loaded``, ``failed``, ``incompatible`` (written for another plugin API),
            ``disabled`` (MMPLUG_DISABLE_PLUGINS) or ``not selected`` (left out by
            MMPLUG_LOAD_PLUGINS).
        error: why it failed, one line.
        components: ``kind:name`` of everything it registered.
        api_version: the plugin API it declares (``MMPLUG_API_VERSION``), None if it
            declares none (or was not imported).
    """

    name: str
    distribution: str
    version: str
    module: str
    status: str = "loaded"
    error: str | None = None
    components: list[str] = field(default_factory=list)
    api_version: object = None

    @property
    def plugin_id(self) -> str:
        """``distribution:name``, the name it is registered under with pluggy."""
        return f"{self.distribution}:{self.name}"

    def failure(self) -> str:
        """One line naming the plugin and why it failed."""
        return f"plugin {self.name!r} ({self.distribution} {self.version}) {self.error}"

    def describe(self) -> dict[str, Any]:
        """A JSON-ready dict (``mmplug plugins --json``)."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "status": self.status,
            "error": self.error,
            "components": list(self.components),
            # an int or None as declared; anything else as its repr, so that JSON can hold it
            "api_version": (
                self.api_version
                if self.api_version is None or type(self.api_version) is int
                else repr(self.api_version)
            ),
        }

    def api_version_text(self) -> str:
        """The declared API as ``mmplug plugins`` shows it: ``?`` for none, a repr if not an int.

        A repr tells ``MMPLUG_API_VERSION = "1"`` (refused) apart from ``1``, and keeps
        ``--json`` working whatever object a plugin declares.
        """
        if self.api_version is None:
            return "?"
        if type(self.api_version) is int:
            return str(self.api_version)
        return repr(self.api_version)


class PluginHost:
    """A plugin manager, the registry its plugins fill, and a record per plugin.

    Args:
        strict: raise :class:`PluginLoadError` on the first plugin failure instead of
            isolating it.
    """

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: list[PluginRecord] = []
        #: What went wrong in loading that is no one plugin's failure, one line each: a
        #: name in MMPLUG_DISABLE_PLUGINS that is not installed, a distribution whose entry
        #: points can't be read.
        self.problems: list[str] = []

    def add(
        self,
        plugin: object,
        *,
        name: str | None = None,
        distribution: str | None = None,
        version: str = "0",
        module: str | None = None,
    ) -> PluginRecord:
        """Register one plugin object (a module or any object with hookimpls) and run its hooks.

        Args:
            plugin: the object carrying ``@mmplug.hookimpl`` functions.
            name: the plugin's name; defaults to the module or class name.
            distribution: the distribution credited with its components; defaults to ``name``.
            version: that distribution's version.
            module: the module it came from, for the report.

        Returns:
            The plugin's record; ``status`` is ``failed`` (with ``error``) if it broke.
        """
        default_name = getattr(plugin, "__name__", None) or type(plugin).__name__
        name = name or default_name
        record = PluginRecord(
            name=name,
            distribution=distribution or name,
            version=version,
            module=module or default_name,
        )
        self.records.append(record)
        record.api_version = getattr(plugin, hookspecs.API_VERSION_ATTRIBUTE, None)
        incompatible = hookspecs.api_incompatibility(record.api_version)
        if incompatible:
            # Checked before its hooks run: a plugin for another API fails in confusing ways.
            return self._reject(record, incompatible, status="incompatible")
        plugin_id = record.plugin_id
        taken = self._id_taken(plugin_id)
        if taken:
            return self._reject(record, taken)
        try:
            hash(plugin)  # pluggy keeps plugins in sets
        except TypeError:
            return self._reject(
                record, f"is not hashable ({type(plugin).__name__}); pluggy needs that"
            )
        try:
            self.manager.register(plugin, name=plugin_id)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pluggy's validation errors, or the plugin's own code
            message = f"could not be registered: {describe_exception(exc)}"
            return self._fail(record, plugin_id, message, exc)
        unknown = self._unknown_hooks(plugin)
        if unknown:
            return self._fail(record, plugin_id, unknown, None)
        if not self.manager.get_hookcallers(plugin):
            message = "implements no mmplug hook (are its hook functions marked @mmplug.hookimpl?)"
            return self._fail(record, plugin_id, message, None)
        others = [p for p in self.manager.get_plugins() if p is not plugin]
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            register = self.registry.register_fn(
                kind, distribution=record.distribution, version=version, plugin=plugin_id
            )
            call = self.manager.subset_hook_caller(hook_name, remove_plugins=others)
            try:
                call(register=register)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin can't end the program
                message = f"{hook_name} raised {describe_exception(exc)}"
                return self._fail(record, plugin_id, message, exc)
        record.components = [
            f"{spec.kind}:{spec.name}"
            for spec in self.registry.components()
            if spec.plugin == plugin_id
        ]
        return record

    def _unknown_hooks(self, plugin: object) -> str | None:
        """Name hookimpls that match no hook (a typo such as ``register_encoder``)."""
        bad = []
        for caller in self.manager.get_hookcallers(plugin) or []:
            if caller.spec is not None:
                continue
            impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
            if all(i.optionalhook for i in impls):
                continue
            close = difflib.get_close_matches(caller.name, hookspecs.HOOKS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            bad.append(f"{caller.name!r}{hint}")
        if not bad:
            return None
        known = ", ".join(hookspecs.HOOKS)
        return f"implements unknown hook {', '.join(bad)}; known hooks: {known}"

    def _fail(
        self, record: PluginRecord, plugin_id: str, message: str, exc: BaseException | None
    ) -> PluginRecord:
        """Mark a plugin failed and roll back whatever it had registered."""
        self.registry.remove_plugin(plugin_id)
        if self.manager.has_plugin(plugin_id):
            self.manager.unregister(name=plugin_id)
        return self._reject(record, message, exc)

    def _id_taken(self, plugin_id: str) -> str | None:
        """Why ``plugin_id`` can't be used, if it is taken.

        Checked before anything else: the rollback of _fail() would otherwise remove the
        plugin already loaded under the same id.
        """
        if self.manager.has_plugin(plugin_id) or self.manager.is_blocked(plugin_id):
            return f"has the same name as a plugin already loaded ({plugin_id})"
        return None

    def _reject(
        self,
        record: PluginRecord,
        message: str,
        exc: BaseException | None = None,
        *,
        status: str = "failed",
    ) -> PluginRecord:
        record.status = status
        record.error = message
        record.components = []
        if self.strict:
            raise PluginLoadError(
                f"plugin {record.name!r} from {record.distribution} {record.version} {message}"
            ) from exc
        return record

    def skip(self, *, name: str, distribution: str, version: str, module: str, status: str) -> None:
        """Record a plugin that was deliberately not loaded."""
        self.records.append(PluginRecord(name, distribution, version, module, status=status))

    def add_module(
        self, target: str, *, name: str, distribution: str, version: str
    ) -> PluginRecord:
        """Import a plugin (``module`` or ``module:object``) and :meth:`add` it.

        An import failure is that plugin's failure, recorded like any other.
        """
        try:
            plugin = import_target(target)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit too: a plugin can't end the program
            record = PluginRecord(name, distribution, version, target)
            self.records.append(record)
            # Nothing was registered yet, so nothing to roll back (and a rollback by id would
            # hit another plugin loaded under the same id).
            return self._reject(record, f"failed to import: {describe_exception(exc)}", exc)
        return self.add(
            plugin, name=name, distribution=distribution, version=version, module=target
        )

    def add_commands(self, cli: Any) -> list[str]:
        """Call each loaded plugin's ``register_commands(cli)``, one plugin at a time.

        A plugin whose hook raises (a command name already taken, an argument that clashes)
        gets none of its commands: whatever it had added is taken out again.

        Args:
            cli: the ``argparse`` sub-parsers object of the ``mmplug`` command.

        Returns:
            One line per plugin whose commands were left out, naming it and why.
        """
        problems = []
        plugins = self.manager.get_plugins()
        # in load order (pluggy keeps plugins in a set): the same plugin wins a clash each time
        order = {r.plugin_id: n for n, r in enumerate(self.records) if r.status == "loaded"}
        for plugin in sorted(plugins, key=lambda p: order.get(self.manager.get_name(p) or "", 0)):
            plugin_id = self.manager.get_name(plugin)
            call = self.manager.subset_hook_caller(
                "register_commands", remove_plugins=[p for p in plugins if p is not plugin]
            )
            if not call.get_hookimpls():
                continue
            # argparse can't remove a sub-parser; these two are where it keeps them
            # (unchanged since Python 3.2), so they are put back as they were.
            parsers, listed = dict(cli._name_parser_map), list(cli._choices_actions)
            try:
                call(cli=cli)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # SystemExit too: a plugin can't end the program
                cli._name_parser_map.clear()
                cli._name_parser_map.update(parsers)
                cli._choices_actions[:] = listed
                record = next(r for r in self.records if r.plugin_id == plugin_id)
                problems.append(
                    f"plugin {record.name!r} ({record.distribution} {record.version}): its "
                    f"commands are left out: register_commands raised {describe_exception(exc)}"
                )
                if self.strict:
                    raise PluginLoadError(problems[-1]) from exc
        return problems

    @property
    def failures(self) -> list[PluginRecord]:
        """Records of the plugins that failed or are incompatible."""
        return [r for r in self.records if r.status in FAILED_STATUSES]


def import_target(target: str) -> Any:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in filter(None, attr_path.split(".")):
        obj = getattr(obj, attr)
    return obj
