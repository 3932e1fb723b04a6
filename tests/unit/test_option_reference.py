"""docs/options.md is what scripts/option_reference.py makes of the code: no flag or setting missing or stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def generator() -> ModuleType:
    """scripts/option_reference.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "option_reference", REPO / "scripts" / "option_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def test_docs_options_is_the_generated_page() -> None:
    page = generator().render()
    written = (REPO / "docs" / "options.md").read_text(encoding="utf-8")
    assert written == page, (
        "docs/options.md is stale: run python scripts/option_reference.py > docs/options.md"
    )


def test_every_config_field_and_flag_has_its_row() -> None:
    # The page lists each config field with the environment variable from_mapping reads for it,
    # and every flag each parser accepts (a row lost by the generator would go unnoticed otherwise).
    gen = generator()
    page = gen.render()
    for config in gen.CONFIGS:
        cls = getattr(importlib.import_module(config.module), config.cls)
        for row in gen.field_rows(cls, config.env_prefix):
            if row.env:
                assert f"| `{row.path}` | `{row.env}` |" in page
    assert "`QM_SCHED_BATCH_BATCH_TOKENS`" in page  # nested configs add their own name
    for command in gen.COMMANDS:
        parser = gen.parser_of(command)
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert f"`{flag}" in page, f"{command.command} {flag}"
