# qmatch runtime image: the official Ray image plus this project (no torch, no model inside).
#
#   docker build -t YOUR-REGISTRY/qmatch:0.1.0-ray2.60.0-py311-cpu .                       # head, CPU
#   docker build --build-arg DEVICE=gpu -t YOUR-REGISTRY/qmatch:0.1.0-ray2.60.0-py311-gpu .  # GPU (CUDA 13)
#
# (tag = <project version>-ray<Ray>-<Python>-<device>; k8s/*.yaml use these names.)
#
# One recipe for both variants; they differ only in the base image and in the onnxruntime swap
# below, so the two can never drift apart. RAY_VERSION and PYTHON_TAG must match pyproject.toml's
# ray pin and the Python the project is tested with (tests/deploy/test_dockerfile.py checks both).
#
# GPU libraries (docs/gpu.md): onnxruntime-gpu 1.31.1 from PyPI is built against CUDA 13.0 and
# cuDNN 9, and its [cuda,cudnn] extras install exactly those as pip packages (nvidia-cuda-runtime
# 13.x, nvidia-cublas 13.x, nvidia-cudnn-cu13 9.x, ...). Those pip libraries are what the CUDA
# provider loads (onnxruntime.preload_dlls()), so they, not the base image, are the source of
# truth, and `python -m embedder.cuda_libs` fails the build when any of them does not resolve.
# The base is pinned to Ray's explicit CUDA 13.0 tag (-cu130), not the -gpu alias: -gpu points at
# whatever CUDA Ray chose as default (cu121 with cuDNN 8 in Ray's image config), which neither
# matches nor is needed; a CUDA 13 base also makes the NVIDIA container toolkit refuse a host
# whose driver is too old for CUDA 13 (R580+) at container start instead of at the first session.
# Ray's image config lists cu13.0.0-cudnn (-cu130) among the ray image's platforms; check the tag
# with `docker manifest inspect rayproject/ray:2.60.0-py311-cu130` before the first build.
# Override with --build-arg GPU_PLATFORM=cu1XX only together with an onnxruntime-gpu built for it.
#
# Models and indexes are not baked in: jobs and replicas read them from object storage
# (s3://, gs://) at run time and cache them per node under QM_CACHE_DIR (default ~/.cache/qmatch).
# torch is not installed (only `python -m export` needs it; export on your own machine).
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG DEVICE=cpu
ARG GPU_PLATFORM=cu130

# BuildKit builds (and pulls) only the stage the final FROM names.
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-cpu AS base-cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${GPU_PLATFORM} AS base-gpu
# base-cpu / base-gpu are the tagged stages above (hadolint cannot follow the variable).
# hadolint ignore=DL3006
FROM base-${DEVICE}

ARG RAY_VERSION
ARG DEVICE

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The base image runs as the unprivileged user `ray` (home /home/ray); so does this one.
WORKDIR /home/ray/qmatch

# Only what the runtime imports (plus the metadata pip needs to build the wheel). export/ and
# bench/ stay out: export is the torch-only tool, bench is for this repository's machines.
COPY --chown=ray:users pyproject.toml README.md serve_config.yaml ./
COPY --chown=ray:users embedder/ embedder/
COPY --chown=ray:users index/ index/
COPY --chown=ray:users storage/ storage/
COPY --chown=ray:users service/ service/
COPY --chown=ray:users jobs/ jobs/
COPY --chown=ray:users deployments/ deployments/

# Non-editable install: every version comes from pyproject.toml (ray[serve,data]==2.60.0 is the
# base image's own Ray, so pip keeps it). GPU: onnxruntime and onnxruntime-gpu write the same
# files, so the CPU build goes first, then the GPU build pinned as pyproject.toml's [gpu] extra,
# WITH its dependencies: the [cuda,cudnn] extras are the CUDA 13 / cuDNN 9 libraries.
# (`pip install '.[gpu]'` would pull the CPU build back in through the base requirements.)
# The checks fail the build, not a pod at run time: the CUDA provider's libraries must resolve
# (embedder/cuda_libs.py: dlopen after preload_dlls, not get_available_providers(), which lists
# CUDA whether or not its libraries are there; only the driver's libcuda.so.1 may be missing,
# the container toolkit mounts it from the host), Ray must still be the base image's version,
# torch must be absent, and the entry points must import.
RUN pip install --no-cache-dir . \
    && if [ "${DEVICE}" != "cpu" ]; then \
         pip uninstall -y onnxruntime \
         && pip install --no-cache-dir "onnxruntime-gpu[cuda,cudnn]==1.31.1" \
         && python -m embedder.cuda_libs; \
       fi \
    && python -c "import ray; assert ray.__version__ == '${RAY_VERSION}', ray.__version__" \
    && python -c "import importlib.util as u, sys; sys.exit('torch is in the runtime image' if u.find_spec('torch') else 0)" \
    && python -c "import deployments.app, jobs.embed_corpus.cli, jobs.build_index.cli, storage"

# Serve HTTP (the only port meant for clients). Ray's own ports (6379, 8265, 10001, ...) are
# for the cluster's pods and the KubeRay operator only; see k8s/ and docs/operations.md, "On a real cluster".
EXPOSE 8000
