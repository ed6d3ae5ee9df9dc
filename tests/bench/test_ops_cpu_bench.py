"""The benchmark script keeps running and keeps comparing like with like (a tiny `--quick` run)."""

import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_bench_prints_one_json_record_per_measurement_with_matching_results():
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "ops_cpu.py"), "--quick"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    ops = {record["op"] for record in records}
    assert {"upsample2d", "downsample2d"} <= ops and any(op.startswith("filtered_lrelu") for op in ops)
    for record in records:
        for key in ("ours_fwd_s", "ref_fwd_s", "ours_fwdbwd_s", "ref_fwdbwd_s"):
            assert record[key] > 0
        assert record["speedup_fwdbwd"] == pytest.approx(record["ref_fwdbwd_s"] / record["ours_fwdbwd_s"], rel=0.02)
        assert record["max_abs_diff_rel"] <= 1e-5  # ours and the official algorithm agree
