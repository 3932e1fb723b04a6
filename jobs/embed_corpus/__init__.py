"""The embed job: parquet corpus -> embeddings parquet (+ quarantine, run state, summary).

`python -m jobs.embed_corpus` runs cli.main (jobs/embed_corpus/__main__.py)."""
