"""CUDA graphs of the torch backend: each backend captures on its own side stream, on its own GPU,
with thread-local capture errors, and several threads share it safely. The capture options are
checked here against this torch's own `torch.cuda.graph`; the captures themselves need a GPU."""

import inspect
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

torch = pytest.importorskip("torch")

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_capture_gets_the_backends_stream_and_thread_local_errors():
    from mslseg.runtime.backends.torch_backend import capture_options

    stream = object()  # the backend's own side stream, whatever it is
    options = capture_options(torch.cuda.graph, stream)
    assert options == {"stream": stream, "capture_error_mode": "thread_local"}
    inspect.signature(torch.cuda.graph).bind(None, **options)  # keywords this torch's API takes

    def graph_without_modes(cuda_graph, pool=None, stream=None):  # a torch before capture_error_mode
        pass

    assert capture_options(graph_without_modes, stream) == {"stream": stream}


@pytest.mark.gpu
@needs_cuda
def test_graph_replays_follow_the_input_on_a_non_current_gpu(checkpoint_path):
    from mslseg.runtime.backends.base import open_backend

    n = torch.cuda.device_count() - 1  # the last GPU; cuda:0 on a 1-GPU machine
    torch.cuda.set_device(0)
    rng = np.random.default_rng(0)
    frames = [rng.standard_normal((1, 3, 64, 96)).astype(np.float32) for _ in range(3)]
    graphs = open_backend(checkpoint_path, device=f"cuda:{n}", cuda_graphs=True)
    eager = open_backend(checkpoint_path, device=f"cuda:{n}")
    try:
        outs = [graphs.infer(f)[0] for f in frames]
        assert torch.cuda.current_device() == 0  # the backend leaves the current device alone
        for f, got in zip(frames, outs, strict=True):
            assert (got == eager.infer(f)[0]).mean() > 0.999  # argmax ties aside, the eager labels
        assert any((outs[0] != o).any() for o in outs[1:]), "replays ignore the input"
    finally:
        graphs.close()
        eager.close()


@pytest.mark.gpu
@needs_cuda
def test_two_graph_backends_called_from_several_threads(checkpoint_path):
    """One backend on cuda:0, one on the last GPU (the same on a 1-GPU machine), called from four
    threads at once: captures and replays of one never break or feed the other's."""
    from mslseg.runtime.backends.base import open_backend

    last = torch.cuda.device_count() - 1
    rng = np.random.default_rng(1)
    frames = [rng.standard_normal((1, 3, 64, 96)).astype(np.float32) for _ in range(6)]
    frames += [rng.standard_normal((2, 3, 32, 64)).astype(np.float32) for _ in range(2)]  # a second shape
    eager = open_backend(checkpoint_path, device="cuda:0")
    backends = [open_backend(checkpoint_path, device=d, cuda_graphs=True) for d in ("cuda:0", f"cuda:{last}")]
    try:
        want = [eager.infer(f)[0] for f in frames]
        jobs = [(b, i) for i in range(len(frames)) for b in backends]
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda job: job[0].infer(frames[job[1]])[0], jobs))
        for (_, i), labels in zip(jobs, got, strict=True):
            assert labels.shape == want[i].shape and (labels == want[i]).mean() > 0.999
        assert any((got[0] != got[2 * i]).any() for i in range(1, 6)), "replays ignore the input"
    finally:
        for b in (*backends, eager):
            b.close()
