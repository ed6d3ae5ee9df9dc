"""The EpiGRAF step benchmark compares like with like: its official-algorithm synthesis gives our image, and a tiny
run prints one consistent record (its float64 use as the network oracle is tests/training/test_networks_epigraf.py)."""

import json
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import epigraf_cpu  # noqa: E402


def test_the_official_synthesis_renders_our_patches():
    args = type("Args", (), dict(resolution=16, patch=8, triplane=16, channels=4, steps=6, cbase=256, cmax=16, batch=2))()
    G, _, _ = epigraf_cpu.build(args, 8)
    official, _, _ = epigraf_cpu.build(args, 8)
    epigraf_cpu.use_official_synthesis(official)
    c, _, _, z = epigraf_cpu.inputs(args)
    patch = (torch.full((2, 2), 0.5), torch.tensor([[0.25, 0.5], [0.0, 0.1]]))
    G.eval()
    official.eval()
    with torch.no_grad():
        ws = G.mapping(z, c)
        ours = G.synthesis(ws, c=c, patch=patch, jitter=False, det=True)
        ref = official.synthesis(ws, c=c, patch=patch)
    assert ours.shape == ref.shape == (2, 3, 8, 8) and float(ref.std()) > 1e-4
    assert float((ours - ref).abs().max()) <= 1e-4


@pytest.mark.slow  # a fresh process: a few seconds
def test_tiny_bench_prints_a_step_record():
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "epigraf_cpu.py"), "--tiny", "--threads", "1"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert record["bench"] == "epigraf_step" and record["resolution"] == 16 and record["patch"] == 8
    assert set(record["seconds"]) == {"patch", "full", "official_patch"} and min(record["seconds"].values()) > 0
    s = record["seconds"]
    assert record["patch_vs_full"] == pytest.approx(s["full"] / s["patch"], rel=0.02)
    assert record["speedup_vs_official"] == pytest.approx(s["official_patch"] / s["patch"], rel=0.02)
    assert record["max_abs_diff"] <= 1e-4
