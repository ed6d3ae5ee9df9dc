"""The visualizer latency benchmark runs and reports consistent figures (a tiny `--quick` run)."""

import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quick_bench_prints_a_request_and_a_drag_record():
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "bench", "viz_latency.py"), "--quick"],
                            capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr
    request, drag = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert request["record"] == "request" and drag["record"] == "drag"
    assert request["resolution"] == 16 and request["device"] == "cpu" and request["load_s"] > 0
    for kind in ("new_seed", "truncation", "noise_mode", "same_frame"):
        figures = request[kind]
        assert 0 < figures["server_render_median_ms"] <= figures["median_ms"] * 1.5, kind
        assert figures["median_ms"] <= figures["max_ms"], kind
    # Every input got a frame; coalescing sends no more requests than inputs.
    assert drag["inputs"] == 30 and 1 <= drag["frames"] <= drag["inputs"]
    assert 0 < drag["median_ms"] <= drag["p95_ms"] <= drag["max_ms"]
    assert request["target_s"] == 0.3 and request["meets_target"] == (request["move_p95_ms"] <= 300)
    slowest = max(request[kind]["max_ms"] for kind in ("new_seed", "truncation", "noise_mode", "same_frame"))
    assert request["move_p95_ms"] <= slowest
    assert drag["within_target"] == (drag["p95_ms"] <= 300)
