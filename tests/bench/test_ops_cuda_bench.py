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
    assert {(r["op"], r["dtype"]) for r in records} == {("bias_act", "float32"), ("bias_act", "float16")}
    for record in records:
        assert record["cuda_ms"] > 0 and record["ref_ms"] > 0
        assert record["speedup"] == pytest.approx(record["ref_ms"] / record["cuda_ms"], rel=0.02)
