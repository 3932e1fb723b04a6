"""`python -m jobs.embed_corpus`: the job's command line (jobs/embed_corpus/cli.py)."""

import sys

from jobs.embed_corpus.cli import main

if __name__ == "__main__":
    sys.exit(main())
