"""The GRAM benchmark compares like with like: its official-GRAM baseline, whole or in chunks of rays,
gives our generator's image from the tensors alone, and a tiny run prints consistent JSON records."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import gram_cpu  # noqa: E402
from training import cameras  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return gram_cpu.build_generator(tiny=True)


@pytest.mark.parametrize("chunk", [None, 5])
def test_the_official_baseline_gives_our_image(tiny, chunk):
    torch.manual_seed(3)
    z = torch.randn([2, tiny.z_dim])
    camera_pos = torch.tensor([[math.pi / 2, math.pi / 2], [math.pi / 2 - 0.1, math.pi / 2 + 0.3]])
    c = cameras.gram_pose_to_label(camera_pos[:, 0], camera_pos[:, 1], tiny.fov)
    with torch.no_grad():
        ours = tiny(z, c, resolution=9)
        ref = gram_cpu.official_generator(tiny, z, camera_pos, 9, chunk=chunk)
    assert ref.shape == ours.shape == (2, 3, 9, 9)
    assert float(ref.std()) > 0.01  # a picture, not a constant
    assert float((ours - ref).abs().max()) <= 1e-4


def test_the_official_baseline_reads_no_module_but_the_tensors(tiny):
    # Only the mapping network (GRAM's, shared with ours) and the field's own forward are called; our
    # radiance network, renderer and intersection code are not.
    called = []
    handles = [m.register_forward_pre_hook(lambda module, args: called.append(type(module).__name__))
               for m in tiny.modules()]
    try:
        with torch.no_grad():
            gram_cpu.official_generator(tiny, torch.randn([1, tiny.z_dim]), torch.tensor([[math.pi / 2] * 2]), 4)
    finally:
        for handle in handles:
            handle.remove()
    assert "GramGenerator" not in called and "FiLMLayer" not in called and "GramRF" not in called


@pytest.mark.slow  # loads torch in a fresh process and renders 6 tiny images
def test_tiny_bench_prints_a_speed_record_per_resolution():
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "gram_cpu.py"), "--tiny",
                             "--resolutions", "8", "16", "--repeats", "1", "--threads", "1"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["bench"], r["resolution"]) for r in records] == [("gram_speed", 8), ("gram_speed", 16)]
    for r in records:
        assert r["ray_chunk"] == 2 ** 8 and r["batch"] == 1 and r["torch_threads"] == 1
        assert r["max_abs_diff"] <= 1e-3  # checked before timing
        assert r["speedup"] == pytest.approx(r["ours_images_per_s"] / r["official_images_per_s"], rel=0.01)
        assert r["speedup_vs_chunked"] == pytest.approx(
            r["ours_images_per_s"] / r["official_chunked_images_per_s"], rel=0.01)
        assert r["meets_speed_goal"] == (r["speedup"] >= 2)
        assert 0 < r["valid_fraction"] <= 1
