"""Ray-free HTTP service: the contract (request/response models, limits, one error map), request
body reading, admission, the EmbedService that runs requests on an engine `Backend`
(engine/backend.py), and the FastAPI app (`python -m service` serves it on one box).
"""
