"""What more than one job uses: the flag parser and run_job (cli), the output file names (layout),
the embeddings parquet contract (embeddings_io) and its filter, the corpus reader, records, Ray errors."""
