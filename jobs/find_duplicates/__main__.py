"""`python -m jobs.find_duplicates`: the job's command line (jobs/find_duplicates/cli.py)."""

import sys

from jobs.find_duplicates.cli import main

if __name__ == "__main__":
    sys.exit(main())
