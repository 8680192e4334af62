"""The ``mmplug`` command.

Exit codes: 0 success; 2 a user error (unknown name, invalid config, bad arguments, a broken
plugin in strict mode), printed as one message without a traceback. Anything else is a bug
and keeps its traceback. ``MMPLUG_DEBUG=1`` shows tracebacks for user errors too.

The listing commands (``plugins``, ``list``, ``info``, ``validate``, ``new-plugin``) never
import torch: they read the registry, not built models. ``train``, ``evaluate``, ``predict``
and ``demo`` (in :mod:`mmplug.commands`) import it when they run.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import types
import typing
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmplug import __version__
from mmplug import commands as commands_
from mmplug.errors import MmplugError, MmplugWarning, UnknownComponentError
from mmplug.plugins import env_flag
from mmplug.registry import KINDS, ComponentSpec

if TYPE_CHECKING:
    from mmplug.plugins import PluginHost

USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not hasattr(args, "extra"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    warnings.showwarning = _show_warning
    try:
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
        print(f"mmplug: warning: {message}", file=sys.stderr)
    else:
        print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmplug", description="Multimodal models assembled from named, pluggable parts."
    )
    parser.add_argument("--version", action="version", version=f"mmplug {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    cmd = commands.add_parser(
        "plugins", help="installed plugin distributions and what they registered"
    )
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=cmd_plugins)

    cmd = commands.add_parser(
        "list",
        help="registered components",
        description="List registered components. KIND is one of: " + ", ".join(KINDS) + ".",
    )
    cmd.add_argument(
        "filters",
        nargs="*",
        metavar="[KIND] [PATTERN]",
        help="a kind and/or a glob pattern such as 'resnet*'",
    )
    cmd.add_argument("--modality", metavar="M", help="only encoders of modality M (and M itself)")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=cmd_list)

    cmd = commands.add_parser("info", help="a component's summary, origin and params")
    cmd.add_argument("name", help="a component name, or distribution:name")
    cmd.add_argument("--kind", choices=KINDS, help="only components of this kind")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=cmd_info)

    cmd = commands.add_parser(
        "validate", help="check a config's names and params without building anything"
    )
    cmd.add_argument("config", help="a YAML or JSON config file")
    cmd.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="dotted overrides, e.g. model.fusion.name=gated",
    )
    cmd.set_defaults(run=cmd_validate)

    cmd = commands.add_parser(
        "new-plugin",
        help="write a complete plugin package to start from",
        description="Write mmplug-NAME/: pyproject.toml with the entry point, a module with "
        "the hook implementation and a small working component, a test file running mmplug's "
        "conformance checks, and a README.",
    )
    cmd.add_argument("name", help="the plugin's name, e.g. 'chars' for mmplug-chars")
    cmd.add_argument(
        "--kind",
        choices=("encoder", "modality", "fusion", "head"),
        default="encoder",
        help="what the package registers (default: encoder); 'modality' writes a modality "
        "and an encoder for it",
    )
    cmd.add_argument(
        "--modality",
        metavar="M",
        help="the modality an encoder consumes (default: text); a modality nothing registers "
        "yet is written into the package too; with --kind modality, its name (default: NAME)",
    )
    cmd.add_argument("--out", metavar="DIR", help="where to write it (default: ./mmplug-NAME)")
    cmd.set_defaults(run=cmd_new_plugin)
    _run_commands(commands)
    return parser


def _run_commands(commands: Any) -> None:
    """``train``, ``evaluate``, ``predict``, ``demo``."""
    cmd = commands.add_parser(
        "train",
        help="train a model from a config; writes a run directory",
        description="Train the model a config describes on its data section's manifests. "
        "Writes a run directory: config.yaml, labels.json, metrics.jsonl, best/ and last/ "
        "checkpoints, training.png.",
    )
    cmd.add_argument(
        "args",
        nargs="*",
        metavar="[CONFIG] [KEY=VALUE ...]",
        help="a YAML or JSON config, then dotted overrides (train.epochs=20); with --resume "
        "the config may be left out",
    )
    cmd.add_argument("--out", metavar="DIR", help="the run directory (default: runs/<time>)")
    cmd.add_argument("--resume", metavar="DIR", help="continue a run from its last/ checkpoint")
    cmd.add_argument("--quiet", action="store_true", help="print only the run directory")
    cmd.set_defaults(run=commands_.cmd_train)

    cmd = commands.add_parser("evaluate", help="a trained run's metrics on a labelled manifest")
    _run_dir_arguments(cmd)
    cmd.add_argument("--data", required=True, metavar="MANIFEST", help="JSONL or CSV, labelled")
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=commands_.cmd_evaluate)

    cmd = commands.add_parser(
        "predict",
        help="predict a manifest, or one sample given as --KEY VALUE",
        description="Predict every row of a manifest (JSON lines: row, label, probabilities), "
        "or one sample whose values are given per modality key: --text 'a dog barks' "
        "--image dog.jpg. Modalities not given are absent.",
    )
    _run_dir_arguments(cmd)
    cmd.add_argument("--data", metavar="MANIFEST", help="JSONL or CSV to predict")
    cmd.add_argument("--out", metavar="FILE", help="write JSON lines here (default: stdout)")
    cmd.set_defaults(run=commands_.cmd_predict, extra=[])

    cmd = commands.add_parser(
        "demo",
        help="generate a text+image+audio dataset, train fused and unimodal models, compare",
        description="Offline: write a synthetic dataset whose label needs all three "
        "modalities, train a fused model and one model per modality, print test accuracy.",
    )
    cmd.add_argument("--out", default="runs/demo", metavar="DIR", help="default: runs/demo")
    cmd.add_argument("--fusion", default="concat", help="the fusion to use (default: concat)")
    cmd.add_argument("--epochs", type=_positive, help="epochs per model (default: the demo's)")
    cmd.set_defaults(run=commands_.cmd_demo)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _run_dir_arguments(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by mmplug train")
    cmd.add_argument("--checkpoint", choices=("best", "last"), default="best", help="default: best")
    cmd.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    cmd.add_argument("--batch-size", type=_positive, default=32, help="default: 32")


# -- helpers ---------------------------------------------------------------------------------


def _load(*, report_failures: bool = True) -> PluginHost:
    from mmplug.plugins import load_plugins

    host = load_plugins()
    if report_failures:
        for record in host.failures:
            print(f"mmplug: warning: {record.failure()}; see 'mmplug plugins'", file=sys.stderr)
    return host


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, indent: int = 0) -> None:
    """Print an aligned table; wide on a pipe so that nothing wraps."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: no markup, '[int]' stays
    console.print(Padding(table, (0, 0, 0, indent), expand=False))


def _parse_list_filters(filters: Sequence[str]) -> tuple[str | None, str | None]:
    """``[KIND] [PATTERN]``: a first word that names a kind is the kind, anything else a pattern."""
    if len(filters) > 2:
        raise MmplugError(f"list takes at most a KIND and a PATTERN, got {' '.join(filters)!r}")
    rest = list(filters)
    kind = _as_kind(rest[0]) if rest else None
    if kind:
        rest.pop(0)
    if len(rest) > 1:
        close = difflib.get_close_matches(rest[0], KINDS, n=1)
        raise UnknownComponentError("kind", rest[0], KINDS, close)
    return kind, (rest[0] if rest else None)


def _as_kind(word: str) -> str | None:
    """``encoder`` or ``encoders`` -> ``encoder``; ``modalities`` -> ``modality``."""
    singular = {"modalities": "modality"}.get(word, word.removesuffix("s"))
    return singular if singular in KINDS else None


# -- commands --------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host = _load(report_failures=False)
    if args.json:
        _print_json([record.describe() for record in host.records])
        return 0
    for record in host.records:
        origin = "core" if record.distribution == "mmplug" else record.name
        where = f"[{origin} -> {record.module}]"
        api = record.api_version_text()
        print(f"{record.distribution} {record.version}  api {api}  {where}  {record.status}")
        if record.error:
            print(f"    error: {record.error}")
        for kind in KINDS:
            names = [c.split(":", 1)[1] for c in record.components if c.startswith(kind + ":")]
            if names:
                print(f"    {kind}: {', '.join(names)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    kind, pattern = _parse_list_filters(args.filters)
    registry = _load().registry
    specs = registry.components(kind, pattern, modality=args.modality)
    if args.json:
        _print_json([spec.describe() for spec in specs])
        return 0
    if not specs:
        print("no components match", file=sys.stderr)
        return 0
    rows = [[s.kind, s.name, s.modality or "", s.distribution, s.version, s.summary] for s in specs]
    _table(["kind", "name", "modality", "distribution", "version", "summary"], rows)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    registry = _load().registry
    specs = [s for s in registry.find(args.name) if args.kind in (None, s.kind)]
    if not specs:
        every = sorted({s.name for s in registry.components(args.kind)})
        raise UnknownComponentError(
            args.kind or "component",
            args.name,
            every,
            difflib.get_close_matches(args.name, every, n=3),
        )
    if args.json:
        _print_json([{**spec.describe(), "params": _params(spec)} for spec in specs])
        return 0
    for index, spec in enumerate(specs):
        if index:
            print()
        print(f"{spec.kind} {spec.name}  ({spec.distribution} {spec.version})")
        if spec.summary:
            print(f"  {spec.summary}")
        if spec.modality:
            print(f"  modality: {spec.modality}")
        params = _params(spec)
        if not params:
            print("  params: none")
            continue
        print("  params:")
        _table(
            ["field", "type", "default", "description"],
            [
                [
                    p["name"],
                    p["type"],
                    "required" if p["required"] else json.dumps(p["default"]),
                    p["description"] or "",
                ]
                for p in params
            ],
            indent=4,
        )
    return 0


def _params(spec: ComponentSpec) -> list[dict[str, Any]]:
    """Field, type, default and description of each param of a component."""
    from pydantic_core import PydanticUndefined

    rows = []
    for name, field in spec.params.model_fields.items():
        required = field.is_required()
        default = None
        if not required:
            try:
                default = field.get_default(call_default_factory=True)
            except Exception:  # a factory that needs the other fields' values
                default = "<computed from other params>"
            if default is PydanticUndefined:
                default = None
        rows.append(
            {
                "name": name,
                "type": _type_name(field.annotation),
                "default": _jsonable(default),
                "required": required,
                "description": field.description,
            }
        )
    return rows


def _type_name(annotation: Any) -> str:
    """How a user would write the type: ``list[int]``, ``'a' | 'b' | None``.

    Constraints (``PositiveInt`` is ``Annotated[int, Gt(0)]``) are left out; the description
    and validation errors carry them.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) if a is not None else "None" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(_type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]" if args else str(origin)
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)  # NaN is not JSON
    except (TypeError, ValueError):
        return repr(value)
    return value


def cmd_validate(args: argparse.Namespace) -> int:
    from mmplug.config import load_config, resolve_model

    registry = _load().registry
    config = load_config(args.config, args.overrides)
    resolved = resolve_model(config, registry, source=args.config)
    print(f"{args.config}: valid")
    components = [(f"encoders.{k}", c) for k, c in resolved.encoders.items()]
    components += [("fusion", resolved.fusion), ("head", resolved.head)]
    for where, component in components:
        spec = component.spec
        params = ", ".join(
            f"{k}={json.dumps(v)}" for k, v in component.params.model_dump(mode="json").items()
        )
        modality = f" [modality {spec.modality}]" if spec.modality else ""
        print(f"  model.{where}: {spec.name} ({spec.distribution} {spec.version}){modality}")
        if params:
            print(f"      {params}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from mmplug.scaffold import new_plugin

    registry = _load().registry if args.modality else None
    target = new_plugin(
        args.name, kind=args.kind, modality=args.modality, out=args.out, registry=registry
    )
    print(f"wrote {target}/")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(target)}")
    print(f"next:\n  pip install -e '{target}[test]'\n  mmplug list\n  pytest {target}/tests")
    return 0
