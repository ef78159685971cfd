"""The ``diffusion-schemes`` command line: ``list``, ``show``, ``schema``, ``doctor``, plus plugin commands.

Exit codes: 0 success; 1 ``doctor`` found a broken plugin, a conflict or an unusable scheme; 2 bad usage or
bad input (unknown kind or name, invalid config, a file that cannot be read or written),
printed as one ``error: ...`` line; 70 an unexpected failure (a bug), printed as one line
with the path of a log holding the full traceback; 130 interrupted (Ctrl-C). A closed output
pipe (``diffusion-schemes list | head -3``) ends the command quietly with 0. Plugin commands
document their own.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from diffusion_schemes.errors import DiffusionSchemesError, PluginWarning
from diffusion_schemes.specs.discovery import ENV_ALLOW, ENV_BLOCK, ENV_STRICT, call_plugin_hook, registry
from diffusion_schemes.specs.base import KINDS

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_CRASH = 70  # sysexits.h EX_SOFTWARE
EXIT_INTERRUPTED = 130


#: The widest a wrapped cell is drawn (``doctor``'s list of schemes, an error's text).
CELL_WIDTH = 72


def _table(rows: list[list[str]], header: list[str], wrap: int | None = None) -> str:
    """Columns padded to their widest cell; with ``wrap``, the last column's cells are wrapped at that
    width and continue on lines of their own, under the column.

    >>> print(_table([["a", "one two three four"]], ["k", "v"], wrap=9))
    k  v
    -  -------
    a  one two
       three
       four
    """
    import textwrap

    cells = [[str(c) for c in r] for r in rows]
    lines_of = [[c] for c in (r[-1] for r in cells)]
    if wrap is not None:
        lines_of = [textwrap.wrap(c, wrap, break_on_hyphens=False) or [""] for c in (r[-1] for r in cells)]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header) - 1)]
    widths.append(max([len(header[-1]), *(len(part) for parts in lines_of for part in parts)]))
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])]
    for r, parts in zip(cells, lines_of):
        out.append(line([*r[:-1], parts[0]]))
        out.extend(line(["" for _ in r[:-1]] + [part]) for part in parts[1:])
    return "\n".join(out)


def cmd_list(args: argparse.Namespace) -> int:
    infos = registry.infos(args.kind)
    if args.json:
        print(json.dumps([
            {"kind": i.kind, "name": i.name, "distribution": i.distribution, "version": i.version, "summary": i.summary}
            for i in infos
        ], indent=2))
        return EXIT_OK
    rows = [[i.kind, i.name, i.distribution, i.version, i.summary] for i in infos]
    print(_table(rows, ["kind", "name", "distribution", "version", "summary"]))
    return EXIT_OK


def _constraints(field: Any) -> str:
    parts = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("min_length", "len>="), ("max_length", "len<=")):
            value = getattr(m, attr, None)
            if value is not None:
                parts.append(f"{sym} {value}")
    return ", ".join(parts)


def cmd_show(args: argparse.Namespace) -> int:
    spec = registry.lookup(args.kind, args.name)
    info = next(i for i in registry.infos(args.kind) if i.name == args.name)
    print(f"{args.kind} {args.name!r} from {info.distribution} {info.version}".rstrip())
    if info.summary:
        print(f"  {info.summary}")
    rows = []
    for fname, field in spec.model_fields.items():
        if fname == "name":
            continue
        typ = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
        rows.append([fname, typ, default, _constraints(field), field.description or ""])
    print()
    print(_table(rows, ["field", "type", "default", "constraints", "description"]) if rows else "  (no fields)")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from diffusion_schemes.specs.config import json_schema

    print(json.dumps(json_schema(args.kind), indent=2))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    import os

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        plugins = registry.plugins()
        conflicts = registry.conflicts()
    print("plugin distributions:")
    rows = []
    for p in plugins:
        detail = p.error or ", ".join(f"{k}:{n}" for k, n in p.schemes)
        rows.append([p.distribution, p.version, p.status, detail])
    print(_table(rows, ["distribution", "version", "status", "detail"], wrap=CELL_WIDTH) if rows else "  (none)")
    for var in (ENV_ALLOW, ENV_BLOCK, ENV_STRICT):
        if var in os.environ:
            print(f"{var}={os.environ[var]!r}")
    if conflicts:
        print("\nconflicts (these names raise when looked up):")
        for (kind, name), dists in conflicts.items():
            print(f"  {kind} {name!r}: registered by {', '.join(dists)}")
    unusable = registry.unusable()  # specs build their validators on first use: doctor builds every one
    if unusable:
        print("\nschemes that cannot be used (pydantic cannot build their spec's validator; every other works):")
        for kind, name, dist, problem in unusable:
            print(f"  {kind} {name!r} of {dist}: {problem}")
    count = {status: sum(p.status == status for p in plugins) for status in ("loaded", "blocked", "failed")}
    failed = count["failed"]
    print(f"\n{count['loaded']} plugin distribution(s) ok, {count['blocked']} blocked, {failed} failed, "
          f"{len(conflicts)} conflict(s), {len(unusable)} unusable scheme(s)")
    return EXIT_PROBLEMS if failed or conflicts or unusable else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, with the commands of every loaded plugin added."""
    parser = argparse.ArgumentParser(
        prog="diffusion-schemes", description="Pluggable diffusion-model schemes: list, inspect and use them by name."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("list", help="list the installed schemes")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="show a scheme's fields, types, defaults and constraints")
    p.add_argument("kind", choices=KINDS)
    p.add_argument("name")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("schema", help="print the JSON Schema of every scheme of a kind")
    p.add_argument("kind", choices=KINDS)
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("doctor", help="report every plugin distribution and every conflict")
    p.set_defaults(func=cmd_doctor)
    from diffusion_schemes.cli.plot import add_parser  # the core's own ``plot`` (matplotlib is imported only when drawing)

    add_parser(sub)
    pm = registry.plugin_manager()
    for name, plugin in pm.list_name_plugin():
        try:
            call_plugin_hook(pm, "register_commands", plugin, cli=sub)
        except Exception as exc:  # noqa: BLE001 - one plugin's commands never break the CLI
            warnings.warn(f"plugin {name!r} failed to add its commands: {exc}", PluginWarning, stacklevel=2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Expected failures (bad input, unreadable or unwritable files) print one ``error:`` line and
    return 2; anything else is a bug: one line naming a log file that holds the traceback, 70.
    """
    try:
        parser = build_parser()  # loads the plugins: strict mode may raise here
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not at the interpreter's exit
        return status
    except BrokenPipeError:
        return _closed_pipe()
    except DiffusionSchemesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f" {exc.filename!r}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: a short message and the traceback in a log
        return _crash(exc)


def _closed_pipe() -> int:
    """The reader of our output went away (``list | head``): stop quietly with 0, as Unix tools do.

    What is still buffered for the closed pipe would fail again at exit, so stdout is pointed at
    the null device first.
    """
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (captured in tests)
        pass
    return EXIT_OK


def _crash(exc: BaseException) -> int:
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        fd, log = tempfile.mkstemp(prefix="diffusion-schemes-crash-", suffix=".log")
        with open(fd, "w", encoding="utf-8") as fh:
            fh.write(f"diffusion-schemes {' '.join(sys.argv[1:])}\n{text}")
        where = f"the full traceback is in {log}"
    except OSError:
        where = "no log could be written: " + text.strip().splitlines()[-1]
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    print(f"diffusion-schemes failed unexpectedly ({type(exc).__name__}: {first}); {where}. "
          "Please report it with that file.", file=sys.stderr)
    return EXIT_CRASH


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
