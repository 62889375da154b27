"""The Dockerfile's two targets, parsed: train (torch) and runtime (no torch), non-root, `mslseg` entrypoint."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _stages() -> tuple[dict[str, str], dict[str, list[tuple[str, str]]]]:
    """(ARGs before the first FROM, {stage name: [(INSTRUCTION, arguments), ...]})."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    global_args: dict[str, str] = {}
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            current = m.group(2)
            stages[current] = [("FROM", m.group(1))]
        elif current is None:
            assert word == "ARG", f"only ARGs before the first FROM, got {word}"
            name, _, value = rest.partition("=")
            global_args[name.strip()] = value.strip()
        else:
            stages[current].append((word, rest.strip()))
    return global_args, stages


def test_both_targets_exist_with_versioned_bases():
    args, stages = _stages()
    assert {"train", "runtime"} <= set(stages)
    for name in ("train", "runtime"):
        base = stages[name][0][1]
        m = re.fullmatch(r"\$\{?(\w+)\}?", base)
        assert m and m.group(1) in args, f"{name}: base image comes from a build ARG, got {base}"
        image = args[m.group(1)]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a version, got {image}"
    assert "pytorch" in args[stages["train"][0][1].strip("${}")]
    assert "tensorrt" in args[stages["runtime"][0][1].strip("${}")]


@pytest.mark.parametrize("stage", ["train", "runtime"])
def test_stage_runs_the_cli_as_a_non_root_user(stage):
    _, stages = _stages()
    steps = stages[stage]
    users = [(i, arg) for i, (word, arg) in enumerate(steps) if word == "USER"]
    assert users, f"{stage}: no USER, the container would run as root"
    last_index, last_user = users[-1]
    assert last_user.split(":")[0] not in ("root", "0")
    assert all(word != "RUN" for word, _ in steps[last_index:]), f"{stage}: RUN after the last USER runs as that user"
    entry = [arg for word, arg in steps if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["mslseg"]
    assert all(word != "HEALTHCHECK" for word, _ in steps)


def test_runtime_target_installs_no_torch():
    _, stages = _stages()
    installs = {name: " ".join(arg for word, arg in steps if word == "RUN" and "pip install" in arg)
                for name, steps in stages.items()}
    assert '".[train,gpu,tensorrt]"' in installs["train"]
    assert '".[gpu]"' in installs["runtime"]
    assert "train" not in installs["runtime"] and "torch" not in installs["runtime"]
    # the TensorRT image brings TensorRT itself: [tensorrt] would fetch another one from NVIDIA's index
    assert "tensorrt" not in installs["runtime"]


# TENSORRT_IMAGE tag -> (its CUDA major, its TensorRT version), from NVIDIA's container release notes
TENSORRT_IMAGES = {"24.10": (12, "10.5.0"), "25.03": (12, "10.9.0.34")}
# onnxruntime-gpu minor -> the TensorRT minor its TensorRT EP is built against (ONNX Runtime's
# TensorRT EP requirements table); all CUDA 12 builds (>= 1.27 are CUDA 13)
ORT_TENSORRT = {"1.20": "10.4", "1.21": "10.8", "1.22": "10.9", "1.24": "10.14"}


def test_bases_and_pins_agree_on_one_cuda_major():
    """Unpinned, [gpu] and [tensorrt] resolve to CUDA 13 builds; both bases are CUDA 12."""
    args, stages = _stages()
    torch_cuda = re.search(r"-cuda(\d+)\.", args["PYTORCH_IMAGE"])
    trt_tag = args["TENSORRT_IMAGE"].rsplit(":", 1)[1].removesuffix("-py3")
    assert trt_tag in TENSORRT_IMAGES, f"add {trt_tag} (CUDA major, TensorRT version) to TENSORRT_IMAGES"
    cuda, trt_version = TENSORRT_IMAGES[trt_tag]
    assert torch_cuda and int(torch_cuda.group(1)) == cuda == 12
    pins = {name: args[name].strip('"') for name in ("ORT_GPU_PIN", "CUDA_PYTHON_PIN", "TENSORRT_VERSION")}
    assert pins["ORT_GPU_PIN"].startswith("onnxruntime-gpu[cuda,cudnn]==")
    ort_minor = ".".join(pins["ORT_GPU_PIN"].split("==")[1].split(".")[:2])
    assert ort_minor in ORT_TENSORRT, f"add onnxruntime-gpu {ort_minor}'s TensorRT to ORT_TENSORRT"
    # the TensorRT EP runs on the TensorRT it was built against
    assert trt_version.startswith(ORT_TENSORRT[ort_minor] + "."), (ort_minor, trt_version)
    assert "<13" in pins["CUDA_PYTHON_PIN"]
    # an engine built in `train` must load in `runtime`: the same TensorRT on both sides
    assert pins["TENSORRT_VERSION"] == trt_version
    for stage, names in {"train": ("ORT_GPU_PIN", "CUDA_PYTHON_PIN", "TENSORRT_VERSION"),
                         "runtime": ("ORT_GPU_PIN", "CUDA_PYTHON_PIN")}.items():
        run = " ".join(arg for word, arg in stages[stage] if word == "RUN" and "pip install" in arg)
        declared = {arg for word, arg in stages[stage] if word == "ARG"}
        for name in names:
            assert name in declared and f"${{{name}}}" in run, f"{stage} does not install with {name}"


def test_dockerignore_keeps_local_state_out_of_the_context():
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
