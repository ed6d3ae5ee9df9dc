import os
import sys

# Shared test utilities (tests/multiproc.py) import as top-level modules.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` need CUDA; on a machine without it they are skipped, with the reason shown."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
