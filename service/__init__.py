"""Ray-free HTTP service: the contract (request/response models, limits, one error map), the
EmbedService that runs requests through a `Stages` implementation, and the FastAPI app.

Stages implementations: in-process (service.inprocess, the single-box mode and the speed
reference), Serve handles (deployments.stages), and a dummy for fast tests (service.dummy).
"""
