"""Write docs/options.md: every flag of every entry point and every config field, from the code itself.

    python scripts/option_reference.py > docs/options.md    # regenerate
    python scripts/option_reference.py --check              # exit 1 when docs/options.md differs

Flags come from the argparse parsers the entry points build (flag, default, choices, help);
config fields from the config classes (type, default) and the comment written beside each field
in the source (read with ast/tokenize, so the reason next to a default is its description).
tests/unit/test_option_reference.py keeps the page equal to this output.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import sys
import tokenize
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "options.md"


@dataclass(frozen=True)
class Config:
    """One config class: where it lives and the environment prefix its fields are read from."""

    title: str
    module: str
    cls: str
    env_prefix: str | None  # None: not read from the environment on its own


@dataclass(frozen=True)
class Command:
    """One entry point: `function` builds its parser and parses argv (stopped here before it runs)."""

    command: str
    module: str
    function: str
    subcommand: str | None = None
    # Which flags also come from an environment variable: flag dest -> the Config (by class name)
    # whose prefix names it; "*" means every flag whose dest is a field of that class.
    env: dict[str, str] = field(default_factory=dict)


# ---- The one table to edit when a module moves (issue 24 moves jobs/ and service/scheduler.py). ----
CONFIGS: tuple[Config, ...] = (
    Config("Model session", "embedder.config", "SessionConfig", "QM_SESSION_"),
    Config("Batching of model calls", "embedder.config", "BatchConfig", None),
    Config("Storage retries", "storage", "RetryConfig", "QM_STORAGE_"),
    Config("Node-local cache", "storage.cache", "CacheConfig", "QM_CACHE_"),
    Config("Embed job", "jobs.embed_corpus.config", "JobConfig", "QM_JOB_"),
    Config("Index build", "index.faiss_index", "IndexConfig", "QM_INDEX_"),
    Config("Duplicates job", "jobs.find_duplicates.config", "DedupConfig", "QM_DEDUP_"),
    Config("Threshold job", "jobs.threshold.run", "ThresholdConfig", "QM_THRESHOLD_"),
    Config("Evaluation job", "jobs.evaluate.run", "EvaluateConfig", "QM_EVALUATE_"),
    Config("Hybrid-fitting job", "jobs.fit_hybrid.run", "FitHybridConfig", "QM_FIT_HYBRID_"),
    Config("HTTP limits", "service.config", "ServingConfig", "QM_SERVE_"),
    Config("Model scheduler", "engine.scheduler", "SchedulerConfig", "QM_SCHED_"),
    Config("Serve app arguments (build_app)", "deployments.app_args", "AppArgs", None),
)
SESSION_FLAGS = {"backend": "SessionConfig", "precision": "SessionConfig"}
COMMANDS: tuple[Command, ...] = (
    Command(
        "python -m embedder encode",
        "embedder.__main__",
        "main",
        "encode",
        {**SESSION_FLAGS, "threads": "SessionConfig"},
    ),
    Command(
        "python -m service",
        "service.__main__",
        "parse_args",
        env={**SESSION_FLAGS, "threads": "SessionConfig", "api_key": "ServingConfig"},
    ),
    Command("python -m export", "export.__main__", "main"),
    Command("python -m jobs.embed_corpus", "jobs.embed_corpus.cli", "parse_args", env={"*": "JobConfig"}),
    Command("python -m jobs.build_index", "jobs.build_index.cli", "parse_args"),
    Command(
        "python -m jobs.find_duplicates", "jobs.find_duplicates.cli", "parse_args", env={"*": "DedupConfig"}
    ),
    Command("python -m jobs.threshold", "jobs.threshold.cli", "parse_args", env={"*": "ThresholdConfig"}),
    Command("python -m jobs.evaluate", "jobs.evaluate.cli", "parse_args", env={"*": "EvaluateConfig"}),
    Command("python -m jobs.fit_hybrid", "jobs.fit_hybrid.cli", "parse_args", env={"*": "FitHybridConfig"}),
)
# -----------------------------------------------------------------------------------------------------

HEADER = """# Option reference

[Back to the README](../README.md)

Every flag of every entry point and every setting of every config class, with its environment
variable and default. Generated from the code (`python scripts/option_reference.py >
docs/options.md`); `tests/unit/test_option_reference.py` fails when this page and the code
differ, so edit the parser's help or the comment beside the field, not this page. How a value is
chosen when several sources give one: [architecture](architecture.md#one-home-per-setting).
"""


class _Parsed(Exception):
    """Raised from parse_args to hand back the parser an entry point built, before it runs anything."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


@contextlib.contextmanager
def _stop_at_parse() -> Iterator[None]:
    # The entry points build their parser inside the function that also parses and runs, so the
    # parser is caught at its first parse_args call; nothing after it (Ray, a server) starts.
    original = argparse.ArgumentParser.parse_args

    def stop(self: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> Any:
        raise _Parsed(self)

    argparse.ArgumentParser.parse_args = stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]


def parser_of(command: Command) -> argparse.ArgumentParser:
    """The parser `command` builds (its subcommand's parser when it has one)."""
    function: Callable[[Sequence[str]], Any] = getattr(
        importlib.import_module(command.module), command.function
    )
    with _stop_at_parse():
        try:
            function([])
        except _Parsed as parsed:
            parser = parsed.parser
        else:
            raise RuntimeError(f"{command.module}.{command.function} never called parse_args")
    if command.subcommand is None:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return typing.cast(argparse.ArgumentParser, action.choices[command.subcommand])
    raise RuntimeError(f"{command.command}: no subcommand {command.subcommand!r}")


def config_class(name: str) -> tuple[Config, type]:
    """The CONFIGS row and the class of a config class name."""
    for config in CONFIGS:
        if config.cls == name:
            return config, getattr(importlib.import_module(config.module), config.cls)
    raise KeyError(name)


# ---- config classes: fields, types, defaults and the comments beside them ----


@dataclass(frozen=True)
class FieldRow:
    path: str  # "batch.batch_tokens" for a nested config
    env: str | None
    type: str
    default: str
    description: str


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """field name -> (annotation as written, the comment above and beside it) from `cls`'s source.

    A field with no comment of its own, written on the line right after a previous field of the same
    type, shares that field's comment above it (one comment above a group of like fields, such as
    `nprobe` and `ef_search`, describes the group).
    """
    source = Path(inspect.getsourcefile(cls) or "").read_text(encoding="utf-8")
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    node = next(
        n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__
    )
    out: dict[str, tuple[str, str]] = {}
    previous: tuple[int, str, str] | None = None  # end line, annotation, above-comment of the last field
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            previous = None
            continue
        above: list[str] = []
        line = stmt.lineno - 1
        while line >= 1 and lines[line - 1].strip().startswith("#"):
            above.insert(0, comments.get(line, ""))
            line -= 1
        beside = [
            comments[n]
            for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            if n in comments and not lines[n - 1].strip().startswith("#")
        ]
        annotation = ast.unparse(stmt.annotation)
        shared = " ".join(above)
        if not above and previous is not None and previous[:2] == (stmt.lineno - 1, annotation):
            shared = previous[2]
        text = " ".join(part for part in (shared, *beside) if part)
        out[stmt.target.id] = (annotation, text)
        previous = ((stmt.end_lineno or stmt.lineno), annotation, shared)
    return out


def show(value: Any) -> str:
    """A default as it would be written in YAML or an environment variable."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) if all(isinstance(v, str) for v in value) else repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}" if not value else repr(value)
    return repr(value)


def _fields(cls: type) -> list[tuple[str, Any, bool, Any]]:
    """(name, type hint, required, default) of a dataclass or a pydantic model."""
    hints = typing.get_type_hints(cls)
    if dataclasses.is_dataclass(cls):
        out = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], False, f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], False, f.default_factory()))
            else:
                out.append((f.name, hints[f.name], True, None))
        return out
    model_fields = getattr(cls, "model_fields", None)
    if model_fields is None:
        raise TypeError(f"{cls.__name__} is neither a dataclass nor a pydantic model")
    return [
        (
            name,
            hints[name],
            info.is_required(),
            None if info.is_required() else info.get_default(call_default_factory=True),
        )
        for name, info in model_fields.items()
    ]


def _is_config(hint: Any) -> bool:
    return isinstance(hint, type) and (dataclasses.is_dataclass(hint) or hasattr(hint, "model_fields"))


def field_rows(cls: type, env_prefix: str | None, path: str = "") -> list[FieldRow]:
    """One row per field; a nested config's fields get rows of their own (`batch.batch_tokens`)."""
    written = field_comments(cls)
    rows: list[FieldRow] = []
    for name, hint, required, default in _fields(cls):
        annotation, description = written.get(name, ("", ""))
        env = f"{env_prefix}{name.upper()}" if env_prefix else None
        if _is_config(hint):
            rows.extend(field_rows(hint, f"{env}_" if env else None, f"{path}{name}."))
            continue
        rows.append(
            FieldRow(path + name, env, annotation, "required" if required else show(default), description)
        )
    return rows


# ---- command-line flags ----


@dataclass(frozen=True)
class FlagRow:
    flag: str
    env: str | None
    default: str
    description: str


def _flag_text(action: argparse.Action) -> str:
    if not action.option_strings:  # a positional argument
        return str(action.metavar or action.dest).upper()
    name = max(action.option_strings, key=len)
    if action.nargs == 0:
        return name
    if action.choices:
        return f"{name} {{{','.join(str(c) for c in action.choices)}}}"
    return f"{name} {action.metavar or action.dest.upper()}"


def flag_rows(command: Command) -> list[FlagRow]:
    """One row per flag of `command`, with the environment variable and default the table gives it."""
    parser = parser_of(command)
    classes = {name: config_class(name) for name in set(command.env.values())}
    rows: list[FlagRow] = []
    for action in parser._actions:
        if (
            isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
            or action.help == argparse.SUPPRESS
        ):
            continue
        owner = command.env.get(action.dest) or command.env.get("*")
        env = default = None
        if owner is not None:
            config, cls = classes[owner]
            fields = {name: (required, value) for name, _hint, required, value in _fields(cls)}
            if action.dest in fields and config.env_prefix:
                env = f"{config.env_prefix}{action.dest.upper()}"
                required, value = fields[action.dest]
                # A flag left unset falls back to the environment, then the field's default.
                if action.default in (None, argparse.SUPPRESS) and not required:
                    default = show(value)
        if default is None:
            default = "–" if action.default in (None, argparse.SUPPRESS) else show(action.default)
        if action.required or not action.option_strings:
            default = "required"
        if isinstance(action, argparse._StoreFalseAction):
            default = f"{action.dest}={default}"  # `--no-progress` turns off `progress`, true by default
        help_text = (action.help or "").replace("%(default)s", str(action.default))
        rows.append(FlagRow(_flag_text(action), env, default, help_text))
    return rows


# ---- the page ----


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or "–"


def _code(text: str | None) -> str:
    return f"`{text}`" if text and text != "–" else "–"


def render() -> str:
    """The whole of docs/options.md."""
    out = [HEADER, "## Commands", ""]
    out.append("A flag given on the command line wins over its environment variable.")
    for command in COMMANDS:
        parser = parser_of(command)
        summary = (parser.description or "").strip().splitlines()
        out += ["", f"### `{command.command}`", ""]
        if summary:
            out += [_cell(summary[0]), ""]
        out += ["| flag | environment | default | description |", "|---|---|---|---|"]
        for row in flag_rows(command):
            out.append(
                f"| {_code(row.flag)} | {_code(row.env)} | {_code(row.default)} | {_cell(row.description)} |"
            )
        if parser.epilog:
            out += ["", _cell(parser.epilog)]
    out += ["", "## Config classes", ""]
    out.append(
        "Each field is settable from YAML or the Serve app args under its name and from its "
        "environment variable (`QM_<SECTION>_<FIELD>`; a nested config adds its own name: "
        "`QM_SCHED_BATCH_BATCH_TOKENS`). Lists are comma-separated in the environment."
    )
    for config in CONFIGS:
        cls = getattr(importlib.import_module(config.module), config.cls)
        doc = (cls.__doc__ or "").strip().splitlines()
        prefix = f"`{config.env_prefix}*`" if config.env_prefix else "no environment variables of its own"
        out += ["", f"### {config.title}: `{config.module}.{config.cls}`", ""]
        out += [f"{_cell(doc[0]) if doc else ''} Environment: {prefix}.".strip(), ""]
        out += ["| field | environment | type | default | description |", "|---|---|---|---|---|"]
        for frow in field_rows(cls, config.env_prefix):
            out.append(
                f"| `{frow.path}` | {_code(frow.env)} | {_code(frow.type)} | {_code(frow.default)} | "
                f"{_cell(frow.description)} |"
            )
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the page, or with --check compare it with docs/options.md (exit 1 when they differ)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare with docs/options.md instead of printing")
    args = p.parse_args(argv)
    page = render()
    if not args.check:
        sys.stdout.write(page)
        return 0
    current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
    if current != page:
        print(
            "docs/options.md is out of date: python scripts/option_reference.py > docs/options.md",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # run as a script from anywhere: the project's packages first
    sys.exit(main())
