"""Tests for torch_utils.training_stats, including a real two-process gloo run."""

import json
import os
import sys
import textwrap

import numpy as np
import pytest
import torch

from torch_utils import distributed, training_stats
from multiproc import run_processes


@pytest.fixture(autouse=True)
def fresh_stats(monkeypatch):
    """Each test starts with empty module state, as in a fresh process."""
    monkeypatch.setattr(training_stats, '_counters', dict())
    monkeypatch.setattr(training_stats, '_cumulative', dict())
    monkeypatch.setattr(training_stats, '_rank', 0)
    monkeypatch.setattr(training_stats, '_sync_device', None)
    monkeypatch.setattr(training_stats, '_sync_called', False)

#----------------------------------------------------------------------------
# Single process.

def test_mean_std_num_match_numpy():
    rng = np.random.default_rng(0)
    chunks = [rng.normal(3, 2, size=n) for n in (1, 7, 20)]
    collector = training_stats.Collector(regex='Loss/.*')
    for chunk in chunks:
        assert training_stats.report('Loss/G', torch.as_tensor(chunk, dtype=torch.float32)) is not None
    training_stats.report('Loss/D', [1.5, 2.5])
    training_stats.report('Loss/D', 4.0)
    training_stats.report('Other/x', 1.0)
    collector.update()

    values = np.concatenate([np.float32(c).astype(np.float64) for c in chunks])
    assert collector.names() == ['Loss/G', 'Loss/D']
    assert collector.num('Loss/G') == 28
    np.testing.assert_allclose(collector.mean('Loss/G'), values.mean(), rtol=1e-12)
    np.testing.assert_allclose(collector.std('Loss/G'), values.std(), rtol=1e-10)
    np.testing.assert_allclose(collector['Loss/D'], np.mean([1.5, 2.5, 4.0]), rtol=1e-12)
    np.testing.assert_allclose(collector.std('Loss/D'), np.std([1.5, 2.5, 4.0]), rtol=1e-12)
    with pytest.raises(KeyError):
        collector.mean('Other/x')

def test_report_returns_value_and_detaches():
    x = torch.ones(3, requires_grad=True)
    y = training_stats.report('a', x * 2)
    assert y.requires_grad  # the caller's value is untouched
    collector = training_stats.Collector()
    assert collector.num('a') == 0  # reports before construction are not part of the first interval
    training_stats.report('a', torch.tensor([1.0, 3.0]))
    collector.update()
    assert collector.num('a') == 2 and collector.mean('a') == 2.0 and collector.std('a') == 1.0

def test_intervals_and_keep_previous():
    keep = training_stats.Collector(keep_previous=True)
    drop = training_stats.Collector(keep_previous=False)
    training_stats.report('a', [1.0, 2.0])
    training_stats.report('b', [10.0])
    keep.update()
    drop.update()
    for c in (keep, drop):
        assert (c.num('a'), c.mean('a')) == (2, 1.5)
        assert (c.num('b'), c.std('b')) == (1, 0.0)

    training_stats.report('a', [5.0])
    keep.update()
    drop.update()
    assert (keep.num('a'), keep.mean('a')) == (1, 5.0)   # only the new interval
    assert (keep.num('b'), keep.mean('b')) == (1, 10.0)  # kept from the previous interval
    assert drop.num('b') == 0 and np.isnan(drop.mean('b')) and np.isnan(drop.std('b'))
    assert drop.as_dict() == {'a': {'num': 1, 'mean': 5.0, 'std': 0.0}}
    assert set(keep.as_dict()) == {'a', 'b'}
    assert keep.as_dict().a.mean == 5.0

def test_two_collectors_see_the_same_interval():
    first = training_stats.Collector()
    training_stats.report('a', [1.0, 2.0, 3.0])
    second = training_stats.Collector()  # consumes nothing that `first` needs
    training_stats.report('a', [7.0])
    first.update()
    second.update()
    assert (first.num('a'), first.mean('a')) == (4, np.mean([1.0, 2.0, 3.0, 7.0]))
    assert (second.num('a'), second.mean('a')) == (1, 7.0)

def test_empty_and_non_finite_values():
    collector = training_stats.Collector()
    training_stats.report('empty', [])
    training_stats.report('bad', [1.0, float('nan')])
    training_stats.report('inf', [1.0, float('inf')])
    collector.update()
    assert collector.names() == ['empty', 'bad', 'inf']
    assert collector.num('empty') == 0 and np.isnan(collector.mean('empty'))
    assert collector.num('bad') == 2 and np.isnan(collector.mean('bad')) and np.isnan(collector.std('bad'))
    assert collector.num('inf') == 2 and np.isnan(collector.mean('inf')) and np.isnan(collector.std('inf'))
    assert 'empty' not in collector.as_dict()

    # The next interval is clean again: a NaN must not stay in the running sums.
    training_stats.report('bad', [2.0, 4.0])
    training_stats.report('inf', [3.0])
    collector.update()
    assert (collector.num('bad'), collector.mean('bad'), collector.std('bad')) == (2, 3.0, 1.0)
    assert (collector.num('inf'), collector.mean('inf')) == (1, 3.0)
    later = training_stats.Collector()  # a collector made after the NaN never sees it
    training_stats.report('bad', [5.0])
    later.update()
    assert later.mean('bad') == 5.0

def test_report0_only_counts_rank_zero(monkeypatch):
    collector = training_stats.Collector()
    training_stats.report0('r', [1.0, 2.0])
    monkeypatch.setattr(training_stats, '_rank', 1)
    assert training_stats.report0('r', [100.0]) == [100.0]
    collector.update()
    assert (collector.num('r'), collector.mean('r')) == (2, 1.5)

def test_large_offset_precision():
    # float64 moments keep the variance of values far from zero.
    values = 1e4 + np.arange(1000, dtype=np.float64) * 1e-3
    collector = training_stats.Collector()
    training_stats.report('x', torch.as_tensor(values))
    collector.update()
    np.testing.assert_allclose(collector.std('x'), values.std(), rtol=1e-6)

def test_init_multiprocessing_after_update_is_refused():
    training_stats.report('x', 1.0)
    training_stats.Collector().update()
    with pytest.raises(RuntimeError, match='before the first'):
        training_stats.init_multiprocessing(rank=0, sync_device=None)

#----------------------------------------------------------------------------
# Two processes over gloo.

_WORKER = textwrap.dedent('''
    import datetime, json, sys
    import numpy as np
    import torch
    from torch_utils import training_stats

    rank, world_size, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                                         world_size=world_size, timeout=datetime.timedelta(seconds=30))
    training_stats.init_multiprocessing(rank=rank, sync_device=None)
    collector = training_stats.Collector(regex='Loss/.*|Only0')
    rng = np.random.default_rng(100 + rank)
    values = {name: rng.normal(rank * 5, rank + 1, size=3 + 4 * rank + k) for k, name in enumerate(['Loss/G', 'Loss/D'])}
    for name, vals in values.items():
        training_stats.report(name, torch.as_tensor(vals))
    training_stats.report('Loss/empty_on_0', [] if rank == 0 else [float(rank)])
    training_stats.report0('Only0', [42.0, 44.0])
    collector.update()
    stats = {name: [collector.num(name), collector.mean(name), collector.std(name)] for name in collector.names()}
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    print('RESULT ' + json.dumps(dict(stats=stats, values={k: v.tolist() for k, v in values.items()})), flush=True)
''')

def _parse_result(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith('RESULT ')]
    assert len(lines) == 1, stdout
    return json.loads(lines[0][len('RESULT '):])

def test_two_gloo_processes_reduce_over_union(tmp_path):
    script = tmp_path / 'worker.py'
    script.write_text(_WORKER)
    port = distributed.find_free_port()
    commands = [[sys.executable, str(script), str(rank), '2', str(port)] for rank in range(2)]
    results = run_processes(commands, timeout=90)
    for code, out, err in results:
        assert code == 0, err[-3000:]
    parsed = [_parse_result(out) for _, out, _ in results]

    for name in ['Loss/G', 'Loss/D']:
        union = np.concatenate([np.asarray(p['values'][name]) for p in parsed])
        for p in parsed:  # every rank sees the same global statistics
            num, mean, std = p['stats'][name]
            assert num == union.size
            np.testing.assert_allclose(mean, union.mean(), rtol=1e-12)
            np.testing.assert_allclose(std, union.std(), rtol=1e-10)
    for p in parsed:
        assert p['stats']['Loss/empty_on_0'] == [1, 1.0, 0.0]
        assert p['stats']['Only0'] == [2, 43.0, 1.0]
        assert list(p['stats']) == ['Loss/G', 'Loss/D', 'Loss/empty_on_0', 'Only0']

#----------------------------------------------------------------------------
