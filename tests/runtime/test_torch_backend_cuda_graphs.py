"""CUDA graphs of the torch backend on `cuda:N` while another GPU is current: replays must follow
the input (a capture outside `torch.cuda.device(N)` records nothing and replays stale labels)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_graph_replays_follow_the_input_on_a_non_current_gpu(checkpoint_path):
    from mslseg.runtime.backend import open_backend

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
