"""The hooks a plugin implements: the whole public plugin contract.

A plugin is a module (named by an entry point in the ``mmplug`` group) with functions marked
``@mmplug.hookimpl``. Each hook receives a ``register`` callback and returns nothing::

    import mmplug

    @mmplug.hookimpl
    def register_encoders(register):
        register("char-cnn", "mmplug_chars.encoder:CharCNN", params=CharCNNParams,
                 modality="text", summary="Character-level CNN")

The four ``register_*`` hooks (one per kind in :mod:`mmplug.kinds`) are called when plugins
load; ``register_commands`` when the ``mmplug`` command starts. Hooks only ever gain
arguments; pluggy hands a hook implementation only the arguments it names, so plugins written
against an older set keep working.

This module imports pluggy and nothing heavier: importing a plugin must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

from mmplug.kinds import HOOK_KINDS

if TYPE_CHECKING:
    from mmplug.plugins.registry import RegisterFn

PROJECT_NAME = "mmplug"

#: The plugin API this core implements. It goes up only when the contract breaks (a hook or
#: an interface changes incompatibly); additions that old plugins can ignore keep it.
API_VERSION = 1
#: The oldest plugin API this core still loads.
OLDEST_API_VERSION = 1
#: The attribute a plugin (its entry-point module or object) sets to the API it was written
#: for: ``MMPLUG_API_VERSION = 1``.
API_VERSION_ATTRIBUTE = "MMPLUG_API_VERSION"


def api_incompatibility(declared: object) -> str | None:
    """Why a plugin declaring API ``declared`` can't load, or None if it can.

    A plugin that declares nothing (``None``) loads: it predates the declaration.
    """
    if declared is None:
        return None
    if not isinstance(declared, int) or isinstance(declared, bool):
        return f"declares {API_VERSION_ATTRIBUTE} = {declared!r}; it must be an int such as 1"
    if declared > API_VERSION:
        return (
            f"is written for plugin API {declared}, newer than this mmplug's (API "
            f"{API_VERSION}): upgrade mmplug"
        )
    if declared < OLDEST_API_VERSION:
        return (
            f"is written for plugin API {declared}, which this mmplug no longer supports "
            f"(API {OLDEST_API_VERSION} to {API_VERSION}): upgrade the plugin"
        )
    return None


hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_modalities(register: RegisterFn) -> None:
    """Register modalities: the loaders that turn a manifest value into a raw object.

    ``register(name, factory, *, params=None, summary=None)``; ``factory(**params)`` returns a
    :class:`mmplug.Modality`.
    """


@hookspec
def register_encoders(register: RegisterFn) -> None:
    """Register encoders: modules that turn a batch of raw objects into features.

    ``register(name, factory, *, params=None, summary=None, modality=...)``; ``modality`` is
    the name of the modality the encoder consumes. ``factory(**params)`` returns a
    :class:`mmplug.Encoder`.
    """


@hookspec
def register_fusions(register: RegisterFn) -> None:
    """Register fusions: modules that combine per-modality features into one vector.

    ``factory(input_dims={key: dim, ...}, **params)`` returns a :class:`mmplug.Fusion`.
    """


@hookspec
def register_heads(register: RegisterFn) -> None:
    """Register heads: task layers with a loss on top of the fused vector.

    ``factory(input_dim=int, **params)`` returns a :class:`mmplug.Head`.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``mmplug`` command line (as simonw/llm's hook of that name).

    ``cli`` is the ``argparse`` sub-parsers object of ``mmplug``::

        command = cli.add_parser("demo", help="one line for mmplug --help")
        command.add_argument("--out", default="runs/demo")
        command.set_defaults(run=run_demo)  # run_demo(args) -> exit code

    When the command runs, ``args.host`` is the loaded :class:`~mmplug.plugins.host.
    PluginHost` (``args.host.registry``). Keep the hook cheap: import heavy modules inside
    ``run``. A plugin whose hook raises (a command name that is taken, say) gets none of its
    commands added and a warning; the other commands work.
    """


#: Every hook's name: the four that register components, then register_commands.
HOOKS: tuple[str, ...] = (*HOOK_KINDS, "register_commands")

__all__ = ["HOOKS", "HOOK_KINDS", "hookimpl", "hookspec"]
