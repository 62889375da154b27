# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target train   -t mslseg:train .     # adapt/export on NVIDIA GPUs (torch, TensorRT)
#   docker build --target runtime -t mslseg:runtime .   # infer on NVIDIA GPUs without torch
# Run: docker run --gpus all --rm -v "$PWD/data:/data" -v "$PWD/runs:/runs" mslseg:train adapt ...
#
# One CUDA major for everything: both bases are CUDA 12 (a driver of R525 or newer), so pip must not
# pull the CUDA 13 builds that unpinned [gpu]/[tensorrt] resolve to (onnxruntime-gpu >= 1.27,
# cuda-python 13, tensorrt 11 -> tensorrt-cu13; driver R580+). ORT_GPU_PIN and CUDA_PYTHON_PIN keep
# pip on CUDA 12, and TENSORRT_VERSION is the TensorRT of TENSORRT_IMAGE (24.10: 10.5.0), so an
# engine built in `train` runs in `runtime` (an engine is tied to its TensorRT version). Change
# the bases and these pins together.
ARG PYTORCH_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
ARG ORT_GPU_PIN="onnxruntime-gpu[cuda,cudnn]>=1.21,<1.27"
ARG CUDA_PYTHON_PIN="cuda-python>=12,<13"
ARG TENSORRT_VERSION=10.5.0

# ---- train: CUDA PyTorch + mslseg[train,gpu,tensorrt] ---------------------------------------
FROM ${PYTORCH_IMAGE} AS train
ARG MSLSEG_UID=1000
ARG ORT_GPU_PIN
ARG CUDA_PYTHON_PIN
ARG TENSORRT_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 OMP_WAIT_POLICY=PASSIVE
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# torch comes from the base image; the [train] extra's torch>=2.4 is already satisfied.
# tensorrt==X is the meta package of tensorrt-cu12==X here; its libraries come from NVIDIA's index.
# DL3013: this installs the project itself from its source, not a registry package.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train,gpu,tensorrt]" "${ORT_GPU_PIN}" "${CUDA_PYTHON_PIN}" \
        "tensorrt==${TENSORRT_VERSION}" \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]

# ---- runtime: TensorRT/CUDA runtime + mslseg[gpu], no torch ---------------------------------
FROM ${TENSORRT_IMAGE} AS runtime
ARG MSLSEG_UID=1000
ARG ORT_GPU_PIN
ARG CUDA_PYTHON_PIN
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/mslseg
COPY pyproject.toml README.md ./
COPY mslseg ./mslseg
COPY export ./export
COPY runtime ./runtime
# the base image ships TensorRT (its Python package too), so no [tensorrt]; [gpu] adds
# onnxruntime-gpu with its CUDA/cuDNN wheels, cuda-python and PyAV, pinned to CUDA 12.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]" "${ORT_GPU_PIN}" "${CUDA_PYTHON_PIN}" \
    && useradd --create-home --uid "${MSLSEG_UID}" mslseg
USER ${MSLSEG_UID}
WORKDIR /work
ENTRYPOINT ["mslseg"]
CMD ["--help"]
