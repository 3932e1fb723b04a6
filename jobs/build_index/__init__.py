"""The index job: embeddings -> a versioned FAISS index directory (build, --update, --rollback).

`python -m jobs.build_index` runs cli.main (jobs/build_index/__main__.py)."""
