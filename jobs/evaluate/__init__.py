"""The evaluation job: top1, MRR@10 and recall@10 of each /match mode on labelled queries.

`python -m jobs.evaluate` runs cli.main (jobs/evaluate/__main__.py)."""
