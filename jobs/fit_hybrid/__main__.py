"""`python -m jobs.fit_hybrid`: the job's command line (jobs/fit_hybrid/cli.py)."""

import sys

from jobs.fit_hybrid.cli import main

if __name__ == "__main__":
    sys.exit(main())
