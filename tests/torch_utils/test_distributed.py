"""Tests for torch_utils.distributed: single process, spawned children, and torchrun-style env:// start."""

import json
import os
import socket
import sys
import textwrap

import pytest
import torch

from torch_utils import distributed
from multiproc import run_processes

TORCHRUN_VARS = ['RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT']

@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    yield
    distributed.cleanup()

#----------------------------------------------------------------------------
# Single process.

def _report_layout(tag):
    return dict(tag=tag, rank=distributed.get_rank(), world_size=distributed.get_world_size(),
                local_rank=distributed.get_local_rank(), main=distributed.is_main(),
                device=str(distributed.get_device()), group=torch.distributed.is_initialized())

def test_single_process_launch_runs_here():
    result = distributed.launch(_report_layout, num_procs=None, args=('x',), device_type='cpu')
    assert result == dict(tag='x', rank=0, world_size=1, local_rank=0, main=True, device='cpu', group=False)
    assert distributed.launch(_report_layout, num_procs=1, args=('y',), device_type='cpu')['tag'] == 'y'
    distributed.barrier()  # no-op without a group

def test_init_single_process_returns_cpu_device():
    assert distributed.init(device_type='cpu') == torch.device('cpu')
    assert (distributed.get_rank(), distributed.get_world_size()) == (0, 1)
    assert not torch.distributed.is_initialized()

def test_find_free_port_is_bindable():
    port = distributed.find_free_port()
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', port))

#----------------------------------------------------------------------------
# User errors: one sentence, our exception type, before any process starts.

@pytest.mark.parametrize('env, needle', [
    (dict(RANK='3', WORLD_SIZE='2'), 'RANK=3 must be in [0, WORLD_SIZE=2)'),
    (dict(RANK='0'), 'RANK is set but WORLD_SIZE is not'),
    (dict(RANK='0', WORLD_SIZE='two'), "WORLD_SIZE='two' is not an integer"),
    (dict(RANK='0', WORLD_SIZE='2', LOCAL_WORLD_SIZE='4'), 'LOCAL_WORLD_SIZE=4 must be in [1, WORLD_SIZE=2]'),
    (dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='0'), 'MASTER_ADDR and MASTER_PORT'),
])
def test_inconsistent_torchrun_env(monkeypatch, env, needle):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(distributed.DistributedSetupError) as info:
        distributed.init(device_type='cpu')
    assert needle in str(info.value)
    assert '\n' not in str(info.value)

def test_explicit_argument_contradicting_env(monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '1')
    with pytest.raises(distributed.DistributedSetupError, match='world_size=2 contradicts the environment WORLD_SIZE=1'):
        distributed.init(world_size=2, device_type='cpu')

def test_launch_count_conflicting_with_torchrun(monkeypatch):
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('WORLD_SIZE', '4')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    with pytest.raises(distributed.DistributedSetupError, match='3 processes were requested but torchrun started 2 per node'):
        distributed.launch(_report_layout, num_procs=3, args=('x',), device_type='cpu')

def test_more_gpus_than_visible(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    with pytest.raises(distributed.DistributedSetupError, match=r'needs 2 CUDA device\(s\) but only 1 is visible'):
        distributed.launch(_report_layout, num_procs=2, args=('x',), device_type='cuda')

@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message shown without CUDA')
def test_cuda_requested_without_cuda():
    with pytest.raises(distributed.DistributedSetupError, match='no CUDA device is available'):
        distributed.init(device_type='cuda')

def test_bad_process_count():
    with pytest.raises(distributed.DistributedSetupError, match='positive integer'):
        distributed.launch(_report_layout, num_procs=0, device_type='cpu')

#----------------------------------------------------------------------------
# Real process groups over gloo.

_SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch
    from torch_utils import distributed

    def main(tag, out_dir):
        rank = distributed.get_rank()
        total = torch.tensor([float(rank + 1)])
        torch.distributed.all_reduce(total)
        distributed.barrier()
        result = dict(tag=tag, rank=rank, world_size=distributed.get_world_size(),
                      local_rank=distributed.get_local_rank(), main=distributed.is_main(),
                      device=str(distributed.get_device()), backend=torch.distributed.get_backend(), total=total.item())
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:  # spawned children share one stdout
            json.dump(result, f)
        return rank

    if __name__ == '__main__':
        num_procs = None if sys.argv[1] == 'none' else int(sys.argv[1])
        returned = distributed.launch(main, num_procs=num_procs, args=('hello', sys.argv[2]), device_type='cpu', timeout=60)
        print('AFTER ' + json.dumps(dict(returned=returned, group=torch.distributed.is_initialized())), flush=True)
''')

def _lines(stdout, prefix):
    return [json.loads(line[len(prefix):]) for line in stdout.splitlines() if line.startswith(prefix)]

def _read_result(out_dir, rank):
    with open(os.path.join(out_dir, f'rank{rank}.json')) as f:
        return json.load(f)

def _clean_env():
    env = {key: value for key, value in os.environ.items() if key not in TORCHRUN_VARS}
    env['CUDA_VISIBLE_DEVICES'] = ''
    return env

def test_spawn_two_cpu_processes(tmp_path):
    script = tmp_path / 'entry.py'
    script.write_text(_SCRIPT)
    [(code, out, err)] = run_processes([[sys.executable, str(script), '2', str(tmp_path)]], timeout=120, envs=[_clean_env()])
    assert code == 0, err[-3000:]
    results = [_read_result(tmp_path, rank) for rank in range(2)]
    for r in results:
        assert r['tag'] == 'hello' and r['world_size'] == 2 and r['local_rank'] == r['rank']
        assert r['main'] == (r['rank'] == 0) and r['device'] == 'cpu' and r['backend'] == 'gloo'
        assert r['total'] == 3.0  # 1 + 2
    assert _lines(out, 'AFTER ') == [dict(returned=None, group=False)]

@pytest.mark.parametrize('layout', ['one_node', 'two_nodes'])
def test_torchrun_env_two_cpu_processes(tmp_path, layout):
    script = tmp_path / 'entry.py'
    script.write_text(_SCRIPT)
    port = distributed.find_free_port()
    envs = []
    for rank in range(2):
        env = _clean_env()
        local_rank, local_world_size = (rank, 2) if layout == 'one_node' else (0, 1)
        env.update(RANK=str(rank), WORLD_SIZE='2', LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(local_world_size),
                   MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
        envs.append(env)
    # As with `torchrun ... train.py --gpus=2`: the requested count matches, so nothing is spawned.
    num_procs = '2' if layout == 'one_node' else 'none'
    results = run_processes([[sys.executable, str(script), num_procs, str(tmp_path)]] * 2, timeout=120, envs=envs)
    for rank, (code, out, err) in enumerate(results):
        assert code == 0, err[-3000:]
        r = _read_result(tmp_path, rank)
        assert r['rank'] == rank and r['world_size'] == 2 and r['total'] == 3.0 and r['backend'] == 'gloo'
        assert r['local_rank'] == (rank if layout == 'one_node' else 0)
        assert r['main'] == (rank == 0)
        assert _lines(out, 'AFTER ') == [dict(returned=rank, group=False)]

#----------------------------------------------------------------------------


def test_a_spawned_worker_stopped_by_a_signal_exits_128_plus_signum(capsys):
    """torch.multiprocessing counts a KeyboardInterrupt in a worker as a success; ours exits 128 + signum."""
    from dnnlib import signals

    def stopped():
        raise signals.Interrupted(15)
    with pytest.raises(SystemExit) as info:
        distributed._spawned_worker(0, stopped, (), dict(world_size=1, device_type='cpu'))
    assert info.value.code == 143
    assert capsys.readouterr().err == 'Interrupted by SIGTERM.\n'
