"""What every job's command line shares: flags and environment into one config, one summary line or one error line.

Settings: a job's config is a frozen dataclass; each field comes from its flag when the flag is
given, else from the job's environment variable (`QM_<JOB>_<FIELD>`), else from the field's
default. `JobArgumentParser.config` does this for every job through `settings.loader.from_mapping`,
so a bad value is refused the same way everywhere, naming the flag or the variable it came from.

Exit codes: 0 done (or nothing to do), 2 wrong input or a clear failure (the message says what and
where; rerunning the same command resumes where a job supports it). A job may add its own (the
threshold job: 1 when no threshold reaches the target).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar

from embedder.errors import EmbedderError
from settings.loader import COMMAND_LINE, ConfigError, from_mapping

T = TypeVar("T")


class JobArgumentParser(argparse.ArgumentParser):
    """A job's flags. Flags not given stay out of the namespace (so the environment can fill them);
    an argument error is one line `<job>: error: ...` and exit 2, like the job's own errors."""

    def __init__(self, job: str, doc: str | None, env_prefix: str | None = None) -> None:
        epilog = (
            f"Any setting can also come from {env_prefix}<FIELD> (e.g. {env_prefix}PROGRESS=off); flags win."
            if env_prefix
            else None
        )
        description = doc.splitlines()[0] if doc else None
        super().__init__(
            prog=f"python -m jobs.{job}",
            description=description,
            epilog=epilog,
            argument_default=argparse.SUPPRESS,
        )
        self.job, self.env_prefix = job, env_prefix
        self.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no step lines or row bars on stderr"
        )

    def error(self, message: str) -> NoReturn:
        print(f"{self.job}: error: {message}", file=sys.stderr)
        sys.exit(2)

    def config(self, cls: type[T], argv: Sequence[str] | None = None) -> T:
        """Parse argv into `cls`: flags given > environment > defaults."""
        given = vars(self.parse_args(argv))
        try:
            return from_mapping(cls, None, self.env_prefix, overrides=given, overrides_from=COMMAND_LINE)
        except ConfigError as exc:
            self.error(str(exc))


def run_job(
    name: str,
    run: Callable[[], dict[str, Any]],
    one_line: Callable[[dict[str, Any]], str],
    exit_code: Callable[[dict[str, Any]], int] = lambda _summary: 0,
) -> int:
    """Run a job; print its summary (`one_line`), or `<name>: error: <reason>` on stderr and return 2."""
    try:
        summary = run()
    except (EmbedderError, ConfigError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(one_line(summary))
    return exit_code(summary)
