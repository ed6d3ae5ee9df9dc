"""Run `training_loop` with JSON options in 1..N processes (the tests start this as a subprocess).

Usage: python tests/training/loop_runner.py <num_procs> <options.json>
The options are the keyword arguments of training_loop; `run_dir` must exist.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402

from torch_utils import distributed  # noqa: E402


def run(options):
    from training.training_loop import training_loop
    torch.set_num_threads(1)  # two processes on a 2-core CI machine
    result = training_loop(**options)
    if distributed.is_main():
        print('RESULT ' + json.dumps(dict(result)))


if __name__ == '__main__':
    num_procs = int(sys.argv[1])
    with open(sys.argv[2]) as f:
        options = json.load(f)
    torch.multiprocessing.set_start_method('spawn', force=True)
    distributed.launch(run, num_procs=num_procs, args=(options,), device_type='cpu')
