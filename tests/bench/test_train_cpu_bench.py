"""The training benchmark keeps running through train.py and keeps its numbers consistent (a tiny `--quick` run)."""

import json
import math
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import train_cpu  # noqa: E402

KEYS = {"bench", "cfg", "resolution", "batch", "channel_base", "channel_max", "sec_per_kimg", "peak_rss_mb",
        "reference_sec_per_kimg", "ratio", "kimg", "timed_kimg", "timed_ticks", "warmup_tick_s", "train_wall_s",
        "cpu_s_per_wall_s", "reference_step_s", "reference_repeats", "threads", "load_avg_1m", "omp_wait_policy"}


def test_status_lines_give_the_kimg_weighted_sec_per_kimg_of_the_ticks_after_tick_0():
    tail = "cpumem 0.44   augment 0.000"
    output = "\n".join([
        "Training for 0.5 kimg...",
        "",
        f"tick 0     kimg 0.008    time 3s           sec/tick 2.0     sec/kimg 250.00  maintenance 1.4    {tail}",
        f"tick 1     kimg 0.108    time 13s          sec/tick 10.0    sec/kimg 100.00  maintenance 0.1    {tail}",
        f"tick 2     kimg 0.408    time 1m 13s       sec/tick 60.0    sec/kimg 200.00  maintenance 0.0    {tail}",
        "",
        "Exiting...",
    ])
    sec_per_kimg, timed_kimg, timed_ticks, tick0_s, final_kimg = train_cpu.tick_timing(output)
    assert sec_per_kimg == pytest.approx((100 * 0.1 + 200 * 0.3) / 0.4)  # not the plain mean, 150
    assert timed_kimg == pytest.approx(0.4) and timed_ticks == 2 and final_kimg == 0.408
    assert tick0_s == pytest.approx(2.0)


def test_status_lines_without_timed_ticks_are_an_error_not_a_number():
    with pytest.raises(RuntimeError, match="status lines"):
        train_cpu.tick_timing("tick 0     kimg 0.008    time 3s    sec/tick 2.0     sec/kimg 250.00  maintenance 1.4\n")


def test_quick_bench_prints_one_consistent_json_record_per_config():
    # Passive OpenMP waiting keeps the run at seconds when other processes share the cores
    # (busy-waiting threads then slow every step down several times); it changes no result.
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "train_cpu.py"), "--quick"],
                            capture_output=True, text=True, timeout=600, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert [record["cfg"] for record in records] == ["stylegan2", "stylegan3-t"]
    kimg, tick, ref_repeats = train_cpu.QUICK
    for record in records:
        assert set(record) == KEYS
        assert record["bench"] == "train_cpu" and record["resolution"] == 32 and record["batch"] == 8
        assert record["omp_wait_policy"] == "PASSIVE" and record["threads"] >= 1
        # The run trained exactly as long as asked; tick 0 is its first step, the rest is timed.
        assert record["kimg"] == pytest.approx(kimg)
        assert record["timed_kimg"] == pytest.approx(kimg - record["batch"] / 1000)
        assert record["timed_ticks"] == math.ceil((kimg - record["batch"] / 1000) / tick - 1e-9)
        for key in ("sec_per_kimg", "reference_sec_per_kimg", "reference_step_s", "warmup_tick_s", "cpu_s_per_wall_s"):
            assert math.isfinite(record[key]) and record[key] > 0, key
        # The timed ticks and the warm-up tick happened inside the child's lifetime.
        timed_s = record["sec_per_kimg"] * record["timed_kimg"]
        assert timed_s + record["warmup_tick_s"] <= record["train_wall_s"]
        # Both sides time a step of the same networks on the same batch: a factor of the batch size or of
        # 1000 between them would be a units bug, not background load (which both are measured under).
        assert 0.2 < record["ratio"] < 20
        assert record["ratio"] == pytest.approx(record["sec_per_kimg"] / record["reference_sec_per_kimg"], rel=0.01)
        assert record["reference_sec_per_kimg"] == pytest.approx(record["reference_step_s"] * 1000 / record["batch"],
                                                                 rel=0.01)
        assert record["reference_repeats"] == ref_repeats
        assert 50 <= record["peak_rss_mb"] <= 8000
