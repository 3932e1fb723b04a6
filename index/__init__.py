"""The index: FAISS build and search, versions under a root with CURRENT, thresholds, filter columns.

Ray-free; read by the jobs, the service and the Serve Searcher (docs/architecture.md).
"""
