"""The CREPS benchmark compares like with like: its official-algorithm baseline gives our generator's images,
from the tensors alone, and a tiny `--quick` run prints consistent JSON records."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import creps_cpu  # noqa: E402


def tiny_generator(resolution=16):
    return creps_cpu.build_generator(creps_cpu.generator_kwargs(resolution, channel_base=256, channel_max=32))


@pytest.mark.parametrize("scale", [1, 1.5, 2])
def test_the_official_baseline_gives_our_images_at_every_scale(scale):
    G = tiny_generator()
    z = creps_cpu.latents(G, 2)
    side = int(16 * scale)
    with torch.no_grad():
        ours = G(z, None, scale=scale)
        ref = creps_cpu.official_generator(G, z, length=side)
    assert ours.shape == ref.shape == (2, 3, side, side)
    assert ref.abs().max() > 0.1  # not a trivially small image
    assert (ours - ref).abs().max().item() <= 1e-3


def test_the_baseline_reads_the_tensors_only_and_runs_bias_act_by_its_reference_path(monkeypatch):
    G = tiny_generator()
    z = creps_cpu.latents(G, 1)
    with torch.no_grad():
        expected = G(z, None)

    def refuse(module, args):
        raise AssertionError(f"the baseline called {type(module).__name__}.forward")
    for module in G.modules():
        module.register_forward_pre_hook(refuse)
    impls, original = [], creps_cpu.bias_act.bias_act

    def spy(*args, **kwargs):
        impls.append(kwargs.get("impl"))
        return original(*args, **kwargs)
    monkeypatch.setattr(creps_cpu.bias_act, "bias_act", spy)
    with torch.no_grad():
        ref = creps_cpu.official_generator(G, z)
    assert (expected - ref).abs().max().item() <= 1e-3
    assert impls and set(impls) == {"ref"}


def test_the_baseline_composes_from_the_second_block_as_officially():
    # The first block's ToRes does not run (its forward tests the forced 'orig' architecture), so its
    # weights and decoder_8 cannot change the image; the last trunk block's ToRes can.
    G = tiny_generator()
    z = creps_cpu.latents(G, 1)
    with torch.no_grad():
        before = creps_cpu.official_generator(G, z)
        G.synthesis.b4.tores.weight.mul_(3)
        getattr(G.synthesis.decoder_8, "0").weight.mul_(3)
        assert torch.equal(creps_cpu.official_generator(G, z), before)
        G.synthesis.b16.tores.weight.mul_(3)
        assert not torch.allclose(creps_cpu.official_generator(G, z), before)


def test_stage_times_cover_each_forward():
    G = tiny_generator()
    z = creps_cpu.latents(G, 1)
    with torch.no_grad():
        ours = creps_cpu.stage_record(lambda times: creps_cpu._ours_staged(G, z, times))
        ref = creps_cpu.stage_record(lambda times: creps_cpu.official_generator(G, z, stage_times=times))
    for record in (ours, ref):
        assert {"mapping", "trunk", "composition", "decoders", "head", "other", "total"} <= set(record)
        parts = sum(v for k, v in record.items() if k != "total")
        assert parts == pytest.approx(record["total"], abs=1e-3) and all(v >= 0 for v in record.values())
    # The hooks and the wrapper are gone afterwards.
    assert creps_cpu.networks_creps._compose_rows.__name__ == "_compose_rows"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in G.modules())


def test_the_official_memory_model_grows_with_the_pixels():
    kwargs = creps_cpu.generator_kwargs(256)
    small, large = (creps_cpu.official_peak_model_mb(kwargs, 1, side) for side in (256, 512))
    assert large == pytest.approx(4 * small) and 100 < small < 200


@pytest.mark.slow  # five fresh processes (one speed, four memory points): 15-30 s on 2 cores
def test_quick_bench_prints_speed_and_memory_records_of_matching_images():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "creps_cpu.py"), "--quick"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    speed = [r for r in records if r["bench"] == "creps_speed"]
    memory = [r for r in records if r["bench"] == "creps_memory"]
    assert len(speed) + len(memory) == len(records)

    assert [r["resolution"] for r in speed] == [16]
    for r in speed:
        kwargs = r["G_kwargs"]
        assert kwargs["z_dim"] == kwargs["w_dim"] == 512 and kwargs["mapping_kwargs"] == {"num_layers": 8}
        assert r["dtype"] == "float32" and r["batch"] == 2 and r["torch_threads"] >= 1
        assert len(r["ours_fwd_times_s"]) == len(r["ref_fwd_times_s"]) == r["repeats"]
        assert r["ours_fwd_s"] == pytest.approx(float(np.median(r["ours_fwd_times_s"])), abs=1e-4)
        assert r["ours_img_s"] == pytest.approx(r["batch"] / r["ours_fwd_s"], rel=0.01)
        assert r["speedup"] == pytest.approx(r["ref_fwd_s"] / r["ours_fwd_s"], rel=0.02)
        assert r["speedup_rounds_min"] <= r["speedup_rounds_max"]
        assert r["meets_speed_goal"] == (r["speedup"] >= r["required_speedup"])
        assert r["max_abs_diff"] <= r["tolerance"] == 1e-3  # checked before timing
        assert r["tile_pixels"] is None and r["ours_minor_faults"] >= 0 and r["ref_minor_faults"] >= 0
        for stages in (r["ours_stages_s"], r["ref_stages_s"]):
            assert {"trunk", "composition", "decoders", "head", "total"} <= set(stages)

    assert [(r["scale"], r["side"]) for r in memory] == [(1, 16), (2, 32)]
    for r in memory:
        assert r["batch"] == 1 and r["ref_skipped"] is None
        assert r["peak_mem_mb"] > 0 and r["ref_peak_mem_mb"] > 0
        assert r["mem_ratio"] == pytest.approx(r["peak_mem_mb"] / r["ref_peak_mem_mb"], rel=0.01)
        assert 0 <= r["max_abs_diff"] <= 1e-3  # ours and the official agree at this scale too


def test_an_official_point_above_the_memory_limit_is_skipped_with_its_estimate(monkeypatch):
    calls = []

    def worker(kind, spec, threads):
        calls.append(spec["impl"])
        return dict(peak_mem_mb=10.0, fwd_s=0.1, sample=[0.0])
    monkeypatch.setattr(creps_cpu, "_worker", worker)
    args = type("Args", (), dict(scales=[8], mem_batch=1, threads=1, max_ref_mem_gb=1.0, tolerance=1e-3))()
    (record,) = creps_cpu.memory_records(args, creps_cpu.generator_kwargs(256))
    assert calls == ["ours"]
    assert record["ref_peak_mem_mb"] is None and record["mem_ratio"] is None
    assert record["ref_mem_estimate_mb"] > 1024 and "GiB" in record["ref_skipped"]
