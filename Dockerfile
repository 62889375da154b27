# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target train   -t mslseg:train .     # adapt/export on NVIDIA GPUs (torch, TensorRT)
#   docker build --target runtime -t mslseg:runtime .   # infer on NVIDIA GPUs without torch
# Run: docker run --gpus all --rm -v "$PWD/data:/data" -v "$PWD/runs:/runs" mslseg:train adapt ...
ARG PYTORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3

# ---- train: CUDA PyTorch + mslseg[train,gpu] ------------------------------------------------
FROM ${PYTORCH_IMAGE} AS train
ARG MSLSEG_UID=1000
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 OMP_WAIT_POLICY=PASSIVE
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# torch comes from the base image; the [train] extra's torch>=2.4 is already satisfied.
# DL3013: this installs the project itself from its source, not a registry package.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train,gpu]" \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]

# ---- runtime: TensorRT/CUDA runtime + mslseg[gpu], no torch ---------------------------------
FROM ${TENSORRT_IMAGE} AS runtime
ARG MSLSEG_UID=1000
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# the base image ships TensorRT's Python package; [gpu] adds onnxruntime-gpu, cuda-python and PyAV.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]" \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]
