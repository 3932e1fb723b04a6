"""`python -m jobs.threshold`: the job's command line (jobs/threshold/cli.py)."""

import sys

from jobs.threshold.cli import main

if __name__ == "__main__":
    sys.exit(main())
