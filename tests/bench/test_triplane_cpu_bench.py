"""The tri-plane benchmark compares like with like: its official-EG3D baseline gives our generator's outputs
from the tensors alone, and a tiny `--tiny` run prints consistent JSON records."""

import json
import os
import subprocess
import sys

import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import triplane_cpu  # noqa: E402


def tiny_generator(**rendering):
    kwargs = triplane_cpu.generator_kwargs(tiny=True)
    kwargs["rendering_kwargs"].update(rendering)
    G = triplane_cpu.build_generator(kwargs)
    G.neural_rendering_resolution = 8
    return G


@pytest.mark.parametrize("ray_chunk", [None, 40])
def test_the_official_baseline_gives_our_outputs(ray_chunk):
    G = tiny_generator(ray_chunk=ray_chunk)
    z, c = triplane_cpu.inputs(G, 2)
    with torch.no_grad():
        ours = G(z, c, noise_mode="const")
        ref = triplane_cpu.official_generator(G, z, c)
    assert ours["image"].shape == ref["image"].shape == (2, 3, 32, 32)
    assert ref["image_depth"].shape == (2, 1, 8, 8)
    assert ref["image_raw"].abs().max() > 0.1  # not a trivially small image
    diffs = triplane_cpu.output_diffs(ours, ref)
    assert max(diffs.values()) <= 1e-4, diffs


def test_the_official_renderer_reads_no_module_but_the_decoders_tensors():
    G = tiny_generator()
    z, c = triplane_cpu.inputs(G, 1)
    with torch.no_grad():
        planes = G._planes(G.mapping(z, c), noise_mode="const")
        origins, dirs = triplane_cpu.official_rays(c[:, :16].view(-1, 4, 4), c[:, 16:25].view(-1, 3, 3), 8)
        ours = G.renderer(planes, G.decoder, origins, dirs, G.rendering_kwargs)

        def refuse(module, args):
            raise AssertionError(f"the baseline called {type(module).__name__}.forward")
        handles = [m.register_forward_pre_hook(refuse) for m in G.modules()]
        try:
            ref = triplane_cpu.official_render(planes, G.decoder, origins, dirs, G.rendering_kwargs)
        finally:
            for handle in handles:
                handle.remove()
    for a, b in zip(ours, ref):
        assert (a - b).abs().max().item() <= 1e-5


def test_stage_times_cover_each_forward():
    G = tiny_generator()
    z, c = triplane_cpu.inputs(G, 1)
    with torch.no_grad():
        ours = triplane_cpu.stage_record(lambda t: triplane_cpu._ours_staged(G, z, c, t))
        ref = triplane_cpu.stage_record(lambda t: triplane_cpu.official_generator(G, z, c, stage_times=t))
    for record in (ours, ref):
        assert {"backbone", "render", "superresolution", "other", "total"} == set(record)
        parts = sum(v for k, v in record.items() if k != "total")
        assert parts == pytest.approx(record["total"], abs=2e-3) and all(v >= 0 for v in record.values())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in G.modules())


def test_memory_records_compare_ours_and_the_official_render_at_each_size(monkeypatch):
    # The workers in this process (the bench runs each in a fresh one, so that peaks do not mask each other).
    calls = []

    def worker(kind, spec, threads):
        calls.append((kind, spec["impl"], spec["nrr"]))
        return triplane_cpu.run_memory(spec)
    monkeypatch.setattr(triplane_cpu, "_worker", worker)
    G_kwargs = triplane_cpu.generator_kwargs(tiny=True)
    G_kwargs["rendering_kwargs"]["ray_chunk"] = 40
    args = type("Args", (), dict(mem_nrr=[8, 16], threads=1, tolerance=1e-4))()
    records = list(triplane_cpu.memory_records(args, G_kwargs))
    assert calls == [("memory", impl, nrr) for nrr in (8, 16) for impl in ("ours", "ref")]
    assert [(m["neural_rendering_resolution"], m["rays"]) for m in records] == [(8, 64), (16, 256)]
    for m in records:
        assert m["bench"] == "triplane_memory" and m["ray_chunk"] == 40 and m["samples_per_ray"] == 12
        assert m["peak_mem_mb"] is None or m["peak_mem_mb"] >= 0
        assert m["ref_peak_mem_mb"] is None or m["ref_peak_mem_mb"] >= 0
        assert 0 <= m["max_abs_diff"] <= 1e-4  # ours and the official agree at this size too


@pytest.mark.slow  # two fresh processes: about 6 s on 2 cores
def test_tiny_bench_prints_a_speed_record_of_matching_outputs():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "triplane_cpu.py"), "--tiny",
                             "--parts", "speed"], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [r["bench"] for r in records] == ["triplane_speed"]
    (r,) = records
    assert r["neural_rendering_resolution"] == 8 and r["img_resolution"] == 32 and r["batch"] == 2
    assert r["superresolution_module"].endswith("SuperresolutionHybrid4X") and r["ray_chunk"] == 40
    assert r["G_kwargs"]["rendering_kwargs"]["jitter"] is False
    assert len(r["ours_fwd_times_s"]) == len(r["ref_fwd_times_s"]) == r["repeats"]
    assert r["ours_img_s"] == pytest.approx(r["batch"] / r["ours_fwd_s"], rel=0.01)
    assert r["speedup"] == pytest.approx(r["ref_fwd_s"] / r["ours_fwd_s"], rel=0.02)
    assert r["meets_speed_goal"] == (r["speedup"] >= r["required_speedup"] == 1.5)
    assert set(r["max_abs_diff"]) == {"image", "image_raw", "image_depth"}
    assert max(r["max_abs_diff"].values()) <= r["tolerance"] == 1e-4  # checked before timing
    for stages in (r["ours_stages_s"], r["ref_stages_s"]):
        assert {"backbone", "render", "superresolution", "total"} <= set(stages)
