"""`python -m jobs.build_index`: the job's command line (jobs/build_index/cli.py)."""

import sys

from jobs.build_index.cli import main

if __name__ == "__main__":
    sys.exit(main())
