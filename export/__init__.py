"""sentence-transformers model -> ONNX artifact. The only package that imports torch."""
