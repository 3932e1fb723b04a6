"""The threshold job: the lowest min_score reaching a target precision on labelled pairs.

`python -m jobs.threshold` runs cli.main (jobs/threshold/__main__.py)."""
