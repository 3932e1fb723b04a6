"""The hybrid-fitting job: the /match hybrid weight alpha of an index version, from labelled queries.

`python -m jobs.fit_hybrid` runs cli.main (jobs/fit_hybrid/__main__.py)."""
