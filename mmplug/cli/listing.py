"""The commands that read the registry: ``plugins``, ``list``, ``info``, ``validate`` and
``new-plugin``. They never import torch: they read component descriptions, not built models.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmplug.errors import MmplugError, UnknownComponentError
from mmplug.kinds import KINDS, PLURAL

if TYPE_CHECKING:
    from mmplug.plugins.host import PluginHost


def add_listing_commands(commands: Any) -> None:
    """``plugins``, ``list``, ``info``, ``validate``, ``new-plugin``."""
    cmd = commands.add_parser(
        "plugins", help="installed plugin distributions and what they registered"
    )
    cmd.add_argument("--json", action="store_true", help="print JSON")
    cmd.set_defaults(run=cmd_plugins, reports_plugins=True)

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
        choices=KINDS,
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


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


#: The width a table's last column wraps at when stdout is not a terminal: wide, so that
#: little wraps.
PIPE_WIDTH = 200


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, indent: int = 0) -> None:
    """Print an aligned table, columns two spaces apart, the last one wrapped to fit the
    terminal (:data:`PIPE_WIDTH` on a pipe).

    Plain text rather than rich's tables: `mmplug list` prints a row per installed component,
    and rich takes about half a millisecond a row (plus its import) where this takes a few
    microseconds.
    """
    import shutil
    import textwrap

    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else PIPE_WIDTH
    lines = [list(columns), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns) - 1)]
    start = indent + sum(w + 2 for w in widths)  # where the last column begins
    for line in lines:
        first, *more = textwrap.wrap(line[-1], max(width - start, 20)) or [""]
        aligned = "".join(cell.ljust(w + 2) for cell, w in zip(line, widths, strict=False))
        print((" " * indent + aligned + first).rstrip())
        for rest in more:
            print(" " * start + rest)


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
    singular = {plural: kind for kind, plural in PLURAL.items()}.get(word, word)
    return singular if singular in KINDS else None


# -- commands --------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    host: PluginHost = args.host
    if args.json:
        print_json([record.describe() for record in host.records])
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
    registry = args.host.registry
    specs = registry.components(kind, pattern, modality=args.modality)
    if args.json:
        print_json([spec.describe() for spec in specs])
        return 0
    if not specs:
        print("no components match", file=sys.stderr)
        return 0
    rows = [[s.kind, s.name, s.modality or "", s.distribution, s.version, s.summary] for s in specs]
    table(["kind", "name", "modality", "distribution", "version", "summary"], rows)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    registry = args.host.registry
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
        print_json([{**spec.describe(), "params": spec.param_rows()} for spec in specs])
        return 0
    for index, spec in enumerate(specs):
        if index:
            print()
        print(f"{spec.kind} {spec.name}  ({spec.distribution} {spec.version})")
        if spec.summary:
            print(f"  {spec.summary}")
        if spec.modality:
            print(f"  modality: {spec.modality}")
        params = spec.param_rows()
        if not params:
            print("  params: none")
            continue
        print("  params:")
        table(
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


def cmd_validate(args: argparse.Namespace) -> int:
    from mmplug.model.config import load_config
    from mmplug.model.resolve import resolve_model

    config = load_config(args.config, args.overrides)
    resolved = resolve_model(config, args.host.registry, source=args.config)
    print(f"{args.config}: valid")
    components = []
    for key, encoder in resolved.encoders.items():
        components += [
            (f"encoders.{key}", encoder),
            (f"modalities.{key}", resolved.modalities[key]),
        ]
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

    target = new_plugin(
        args.name, kind=args.kind, modality=args.modality, out=args.out, registry=args.host.registry
    )
    print(f"wrote {target}/")
    for path in sorted(p for p in target.rglob("*") if p.is_file()):
        print(f"  {path.relative_to(target)}")
    print(f"next:\n  pip install -e '{target}[test]'\n  mmplug list\n  pytest {target}/tests")
    return 0
