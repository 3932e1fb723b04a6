"""The duplicates job: exact and near duplicate pairs and groups of an embeddings directory.

`python -m jobs.find_duplicates` runs cli.main (jobs/find_duplicates/__main__.py)."""
