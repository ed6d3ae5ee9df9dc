"""The generator benchmark keeps running and keeps comparing like with like (a tiny `--quick` run)."""

import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_bench_prints_one_json_record_per_generator_with_matching_images():
    # Passive OpenMP waiting keeps the smoke test at seconds when other processes share the cores
    # (busy-waiting threads then slow every op down several times); it changes no result.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "generator_cpu.py"), "--quick"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [record["arch"] for record in records] == ["stylegan2", "stylegan3-t", "stylegan3-r"]
    for record in records:
        assert record["dtype"] == "float32" and record["torch_threads"] >= 1 and record["batch"] >= 1
        kwargs = record["G_kwargs"]
        assert kwargs["img_resolution"] == record["resolution"] and kwargs["z_dim"] == kwargs["w_dim"] == 512
        for key in ("ours_fwd_s", "ref_fwd_s", "ours_img_s", "ref_img_s", "speedup", "peak_mem_mb", "ref_peak_mem_mb",
                    "cpu_s_per_wall_s"):
            assert record[key] > 0, key
        assert record["ours_img_s"] == pytest.approx(record["batch"] / record["ours_fwd_s"], rel=0.01)
        assert record["speedup"] == pytest.approx(record["ref_fwd_s"] / record["ours_fwd_s"], rel=0.02)
        # The reference really ran the official algorithm of the op the network leans on.
        op = "upfirdn2d" if record["arch"] == "stylegan2" else "filtered_lrelu"
        assert record["ref_calls_per_forward"][op] > 0
        # Ours and the official algorithm produce the same images.
        assert record["max_abs_diff_rel"] <= 1e-4
        assert record["max_abs_diff"] >= 0
        # Published figures belong to the full-size configurations only.
        assert record["official_img_s_published"] is None and record["ours_vs_official_cross_machine"] is None
    # StyleGAN2: the official modulated convolution ran in the reference, and the training step was timed too.
    stylegan2 = records[0]
    assert stylegan2["ref_calls_per_forward"]["modulated_conv2d"] > 0
    assert stylegan2["ours_train_step_s"] > 0 and stylegan2["ref_train_step_s"] > 0
    assert stylegan2["train_step_speedup"] == pytest.approx(stylegan2["ref_train_step_s"] / stylegan2["ours_train_step_s"], rel=0.02)
    assert all("train_step_speedup" not in record for record in records[1:])
    stylegan3_r = records[2]["G_kwargs"]
    assert stylegan3_r["conv_kernel"] == 1 and stylegan3_r["use_radial_filters"] is True
    assert stylegan3_r["channel_base"] == 2 * records[1]["G_kwargs"]["channel_base"]


def test_stylegan2_profile_lists_ours_and_the_official_algorithm_per_mode():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "profile_stylegan2_cpu.py"), "--quick",
                             "--resolutions", "16", "--repeats", "1", "--top", "3"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["impl"]) for r in records] == [(mode, impl) for mode in ("G_forward", "GD_train_step", "R1")
                                                         for impl in ("ours", "official")]
    for record in records:
        assert record["aten_self_ms"] > 0 and 1 <= len(record["top_ops"]) <= 3
        assert all(op["op"].startswith("aten::") and op["calls"] >= 1 for op in record["top_ops"])
