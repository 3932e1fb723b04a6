"""The engine: what runs a request's model and search work, apart from HTTP and from Ray.

- engine.backend: the `Backend` protocol every topology implements (tokenize, encode, search, status)
  and the values that cross it;
- engine.model_info: what the service knows about the served model, built from its Manifest;
- engine.scheduler: the fair, token-budgeted ModelScheduler that merges requests into model passes;
- engine.local_tokenizer / engine.inprocess: the artifact's tokenizer as an async stage, and the
  in-process backend (single box, the "inline" Serve topology, bench.serve's speed reference).
Serve-handle backends live in deployments/handle_backends.py; a numpy dummy for tests in testkit/.
"""
