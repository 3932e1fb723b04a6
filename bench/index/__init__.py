"""The FAISS benchmarks, one command with a sub-command each: `python -m bench.index latency|filter|scale`."""
