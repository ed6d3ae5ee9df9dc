"""bench/ops_cuda.py: one clear sentence without a GPU; on a CUDA machine, a quick run whose records
compare the kernel with the reference path."""

import json
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO_ROOT, "bench", "ops_cuda.py")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_without_cuda_it_says_so_in_one_sentence():
    result = subprocess.run([sys.executable, SCRIPT, "--quick"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip() == "Error: bench/ops_cuda.py needs a CUDA GPU, and PyTorch sees none on this machine."


@pytest.mark.gpu
def test_quick_run_on_cuda_prints_matching_records():
    result = subprocess.run([sys.executable, SCRIPT, "--quick"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    ops = {(r["op"], r.get("dtype")) for r in records}
    assert ops == {(op, dtype) for op in ("bias_act", "upsample2d", "downsample2d", "filtered_lrelu")
                   for dtype in ("float32", "float16")} | {("G_stylegan2", None), ("G_stylegan3-t", None)}
    for record in records:
        if record["op"].startswith("G_"):
            assert record["speedup"] == pytest.approx(record["cuda_images_per_s"] / record["ref_images_per_s"], rel=0.05)
        else:
            assert record["cuda_ms"] > 0 and record["ref_ms"] > 0
            assert record["speedup"] == pytest.approx(record["ref_ms"] / record["cuda_ms"], rel=0.02)


def test_measurements_run_and_report_like_with_like_on_the_cpu():
    # On the CPU both sides take the reference path: this checks the script, not the kernels.
    sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
    import ops_cuda
    for name, make_step in ops_cuda.measurements(device="cpu"):
        record = ops_cuda.bench_op(name, make_step, resolution=8, dtype=torch.float32, repeats=1, device="cpu")
        assert record["op"] == name and record["resolution"] == 8 and record["dtype"] == "float32"
        assert record["cuda_ms"] > 0 and record["ref_ms"] > 0 and record["gpu"] is None
    assert [shape[1:] for shape in ops_cuda.stylegan2_layer_shapes(16)] == [[512, 4, 4]] * 2 + [[512, 8, 8]] * 2 + [[512, 16, 16]] * 2
    assert ops_cuda.stylegan2_layer_shapes(1024)[-1] == [4, 32, 1024, 1024]


def test_filtered_lrelu_calls_are_those_of_a_stylegan3_forward_pass(monkeypatch):
    sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
    import ops_cuda
    from training import networks_stylegan3
    calls = ops_cuda.stylegan3_filtered_lrelu_calls(16, batch=2, device="cpu")
    synthesis = networks_stylegan3.SynthesisNetwork(w_dim=512, img_resolution=16, img_channels=3)
    layers = [getattr(synthesis, name) for name in synthesis.layer_names]
    assert len(calls) == len(layers) == 15
    for (shape, kwargs), layer in zip(calls, layers):
        assert shape[:2] == [2, layer.out_channels] and kwargs["up"] == layer.up_factor
        assert kwargs["down"] == layer.down_factor and list(kwargs["padding"]) == list(layer.padding)
    # The timing loop over recorded calls, on one small call (on the CPU both sides are the reference).
    tiny = [([1, 2, 8, 8], dict(calls[3][1], b=torch.zeros(2)))]
    monkeypatch.setattr(ops_cuda, "stylegan3_filtered_lrelu_calls", lambda *a, **k: tiny)
    record = ops_cuda.bench_filtered_lrelu(16, torch.float32, repeats=1, device="cpu")
    assert record["op"] == "filtered_lrelu" and record["cuda_ms"] > 0 and record["ref_ms"] > 0


@pytest.mark.parametrize("cfg", ["stylegan2", "stylegan3-t"])
def test_generator_throughput_runs_with_and_without_kernels_on_the_cpu(cfg):
    sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))
    import ops_cuda
    from torch_utils import custom_ops
    before = os.environ.get(custom_ops.CUDA_KERNELS_ENV)
    record = ops_cuda.bench_generator(cfg, 16, batch=1, repeats=1, device="cpu", channel_base=256, channel_max=8)
    assert os.environ.get(custom_ops.CUDA_KERNELS_ENV) == before  # restored
    assert record["op"] == f"G_{cfg}" and record["cuda_images_per_s"] > 0 and record["ref_images_per_s"] > 0
    assert record["speedup"] == pytest.approx(record["cuda_images_per_s"] / record["ref_images_per_s"], rel=0.05)
