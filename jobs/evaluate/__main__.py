"""`python -m jobs.evaluate`: the job's command line (jobs/evaluate/cli.py)."""

import sys

from jobs.evaluate.cli import main

if __name__ == "__main__":
    sys.exit(main())
