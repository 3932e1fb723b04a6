# qmatch runtime image: the official Ray image plus this project (no torch, no model inside).
#
#   docker build -t YOUR-REGISTRY/qmatch:0.1.0-ray2.60.0-py311-cpu .                       # head, CPU
#   docker build --build-arg DEVICE=gpu -t YOUR-REGISTRY/qmatch:0.1.0-ray2.60.0-py311-gpu .  # GPU
#
# (tag = <project version>-ray<Ray>-<Python>-<device>; k8s/*.yaml use these names.)
#
# One recipe for both variants: they differ only in the base tag (rayproject/ray:<ray>-<py>-cpu
# or -gpu) and in the onnxruntime swap below, so the two can never drift apart. Ray's -gpu tag
# is an alias of one of its -cuXXX tags; onnxruntime-gpu 1.31's CUDA provider needs CUDA 12 and
# cuDNN 9 libraries, so if the alias moves, build with DEVICE=cu12X (any DEVICE but cpu gets the
# GPU swap). RAY_VERSION and PYTHON_TAG must match pyproject.toml's ray
# pin and the Python the project is tested with (tests/deploy/test_dockerfile.py checks both).
#
# Models and indexes are not baked in: jobs and replicas read them from object storage
# (s3://, gs://) at run time and cache them per node under QM_CACHE_DIR (default ~/.cache/qmatch).
# torch is not installed (only `python -m export` needs it; export on your own machine).
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG DEVICE=cpu

FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${DEVICE}

ARG RAY_VERSION
ARG DEVICE

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The base image runs as the unprivileged user `ray` (home /home/ray); so does this one.
WORKDIR /home/ray/qmatch

# Only what the runtime imports (plus the metadata pip needs to build the wheel). export/ and
# bench/ stay out: export is the torch-only tool, bench is for this repository's machines.
COPY --chown=ray:users pyproject.toml README.md serve_config.yaml ./
COPY --chown=ray:users embedder/ embedder/
COPY --chown=ray:users service/ service/
COPY --chown=ray:users jobs/ jobs/
COPY --chown=ray:users deployments/ deployments/

# Non-editable install: every version comes from pyproject.toml (ray[serve,data]==2.60.0 is the
# base image's own Ray, so pip keeps it). GPU: onnxruntime and onnxruntime-gpu write the same
# files, so the CPU build goes first and the GPU build (pinned as pyproject.toml's [gpu] extra)
# is force-installed without deps (its deps are the CPU build's, already here);
# `pip install '.[gpu]'` would pull the CPU build back in.
# The checks fail the build, not a pod at run time: Ray must still be the base image's version,
# torch must be absent, and the GPU build must offer the CUDA provider (the real check is at
# model load: embedder/session.py raises ProviderUnavailable when CUDA is not usable).
RUN pip install --no-cache-dir . \
    && if [ "${DEVICE}" != "cpu" ]; then \
         pip uninstall -y onnxruntime \
         && pip install --no-cache-dir --force-reinstall --no-deps onnxruntime-gpu==1.31.1 \
         && python -c "import onnxruntime as o; p = o.get_available_providers(); assert 'CUDAExecutionProvider' in p, p"; \
       fi \
    && python -c "import ray; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
    && python -c "import importlib.util as u, sys; sys.exit('torch is in the runtime image' if u.find_spec('torch') else 0)" \
    && python -c "import deployments.app, jobs.embed_corpus, jobs.build_index, embedder.storage"

# Serve HTTP (the only port meant for clients). Ray's own ports (6379, 8265, 10001, ...) are
# for the cluster's pods and the KubeRay operator only; see k8s/ and README "On a real cluster".
EXPOSE 8000
