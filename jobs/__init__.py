"""Ray Data jobs, one subpackage per command: `python -m jobs.embed_corpus`, `jobs.build_index`,
`jobs.find_duplicates`, `jobs.threshold` (each: __main__ -> cli.main -> its run); what more than
one job uses lives in jobs.common."""
