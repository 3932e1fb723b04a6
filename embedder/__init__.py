"""Ray-free core: exported artifact, tokenizer, ONNX session, pooling, encoder, index."""

from embedder.encoder import Encoded, Encoder

__all__ = ["Encoded", "Encoder"]
