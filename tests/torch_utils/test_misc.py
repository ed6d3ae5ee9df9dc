"""Tests for torch_utils.misc."""

import json
import os
import re
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch

from torch_utils import distributed, misc
from multiproc import run_processes

#----------------------------------------------------------------------------
# constant

def test_constant_values_and_cache():
    a = misc.constant([1, 2, 3], dtype=torch.float32)
    assert a.dtype == torch.float32 and a.device.type == 'cpu'
    np.testing.assert_array_equal(a.numpy(), [1, 2, 3])
    assert misc.constant([1, 2, 3], dtype=torch.float32) is a
    assert misc.constant(np.array([1, 2, 3]), dtype=torch.float32) is a
    assert misc.constant([1, 2, 4], dtype=torch.float32) is not a
    assert misc.constant([1, 2, 3], dtype=torch.float64) is not a

def test_constant_broadcast_and_default_dtype():
    b = misc.constant(0.5, shape=[2, 3])
    assert b.dtype == torch.get_default_dtype()
    assert b.shape == (2, 3) and b.is_contiguous()
    np.testing.assert_array_equal(b.numpy(), np.full([2, 3], 0.5))
    c = misc.constant([1.0, 2.0], shape=[3, 2])
    np.testing.assert_array_equal(c.numpy(), np.tile([1.0, 2.0], (3, 1)))

def test_constant_memory_format():
    d = misc.constant(1.0, shape=[1, 3, 2, 2], memory_format=torch.channels_last)
    assert d.is_contiguous(memory_format=torch.channels_last)
    assert misc.constant(1.0, shape=[1, 3, 2, 2]) is not d

def test_aliases():
    x = torch.tensor([float('nan'), float('inf'), -float('inf'), 1.0])
    np.testing.assert_array_equal(misc.nan_to_num(x, nan=0, posinf=5, neginf=-5).numpy(), [0, 5, -5, 1])
    misc.symbolic_assert(True, 'never raised')
    with pytest.raises(AssertionError, match='boom'):
        misc.symbolic_assert(False, 'boom')

#----------------------------------------------------------------------------
# suppress_tracer_warnings / assert_shape

def test_suppress_tracer_warnings_restores_filters():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        with misc.suppress_tracer_warnings():
            warnings.warn('hidden', torch.jit.TracerWarning)
            warnings.warn('shown', UserWarning)
        warnings.warn('after', torch.jit.TracerWarning)
    assert [str(w.message) for w in caught] == ['shown', 'after']
    assert warnings.filters == before

def test_assert_shape_accepts_and_wildcards():
    x = torch.zeros([2, 3, 4])
    misc.assert_shape(x, [2, 3, 4])
    misc.assert_shape(x, [None, 3, None])
    misc.assert_shape(x, (2, None, 4))

def test_assert_shape_messages():
    x = torch.zeros([2, 3, 4])
    with pytest.raises(AssertionError, match=re.escape('Wrong number of dimensions: got 3, expected 2')):
        misc.assert_shape(x, [2, 3])
    with pytest.raises(AssertionError, match=re.escape('Wrong size for dimension 1: got 3, expected 5')):
        misc.assert_shape(x, [2, 5, 4])

def test_assert_shape_tensor_sizes():
    x = torch.zeros([2, 3])
    misc.assert_shape(x, [torch.tensor(2), None])
    with pytest.raises(Exception, match='Wrong size for dimension 0'):
        misc.assert_shape(x, [torch.tensor(7), None])

@pytest.mark.filterwarnings('ignore::DeprecationWarning')
def test_assert_shape_under_trace():
    def fn(x, y):
        misc.assert_shape(x, [y.shape[0], 3])  # y.shape[0] is a tensor while tracing
        return x * 2
    with warnings.catch_warnings():
        warnings.simplefilter('error', torch.jit.TracerWarning)  # assert_shape must not leak tracer warnings
        traced = torch.jit.trace(fn, (torch.ones([2, 3]), torch.ones([2])))
    np.testing.assert_array_equal(traced(torch.ones([5, 3]), torch.ones([5])).numpy(), np.full([5, 3], 2.0))

#----------------------------------------------------------------------------
# profiled_function

def test_profiled_function_name_and_record():
    @misc.profiled_function
    def my_op(x, scale=1):
        """Doc."""
        return x * scale
    assert my_op.__name__ == 'my_op' and my_op.__doc__ == 'Doc.'
    with torch.autograd.profiler.profile() as prof:
        y = my_op(torch.ones(3), scale=3)
    np.testing.assert_array_equal(y.numpy(), [3, 3, 3])
    assert 'my_op' in [event.name for event in prof.function_events]

#----------------------------------------------------------------------------
# InfiniteSampler

def _take(sampler, count):
    it = iter(sampler)
    return [int(next(it)) for _ in range(count)]

def _reference_stream(n, seed, window_size, count):
    """Independent re-statement of the sampler's documented algorithm."""
    rnd = np.random.RandomState(seed)
    order = list(range(n))
    rnd.shuffle(order)
    window = int(np.rint(n * window_size))
    out = []
    for idx in range(count):
        i = idx % n
        out.append(order[i])
        if window >= 2:
            j = (i - rnd.randint(window)) % n
            order[i], order[j] = order[j], order[i]
    return out

def test_infinite_sampler_matches_reference_and_is_deterministic():
    dataset = list(range(10))
    stream = _take(misc.InfiniteSampler(dataset, seed=3), 57)
    assert stream == _reference_stream(10, 3, 0.5, 57)
    assert stream == _take(misc.InfiniteSampler(dataset, seed=3), 57)
    assert stream != _take(misc.InfiniteSampler(dataset, seed=4), 57)
    assert set(stream) == set(range(10))

def test_infinite_sampler_no_shuffle():
    assert _take(misc.InfiniteSampler(list(range(4)), shuffle=False), 10) == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]

def test_infinite_sampler_replicas_partition_stream():
    dataset = list(range(13))
    full = _take(misc.InfiniteSampler(dataset, seed=1), 90)
    for rank in range(3):
        part = _take(misc.InfiniteSampler(dataset, rank=rank, num_replicas=3, seed=1), 30)
        assert part == full[rank::3]

@pytest.mark.parametrize('start', [1, 7, 20, 123, 1000])
def test_infinite_sampler_resume_equals_uninterrupted(start):
    dataset = list(range(17))
    full = _take(misc.InfiniteSampler(dataset, seed=5), start + 40)
    assert _take(misc.InfiniteSampler(dataset, seed=5, start_index=start), 40) == full[start:]
    # Per rank, with the start counted in global positions (images consumed by all ranks).
    for rank in range(2):
        resumed = _take(misc.InfiniteSampler(dataset, rank=rank, num_replicas=2, seed=5, start_index=start), 15)
        first = start + ((rank - start) % 2)
        assert resumed == full[first::2][:15]

def test_infinite_sampler_resume_crosses_fast_forward_chunks(monkeypatch):
    original = misc.InfiniteSampler._fast_forward
    monkeypatch.setattr(misc.InfiniteSampler, '_fast_forward',
                        staticmethod(lambda order, rnd, window, count: original(order, rnd, window, count, chunk=7)))
    dataset = list(range(11))
    full = _take(misc.InfiniteSampler(dataset, seed=2), 100)
    assert _take(misc.InfiniteSampler(dataset, seed=2, start_index=60), 40) == full[60:]

def test_infinite_sampler_validation():
    with pytest.raises(ValueError):
        misc.InfiniteSampler([])
    with pytest.raises(ValueError):
        misc.InfiniteSampler([1, 2], rank=2, num_replicas=2)
    with pytest.raises(ValueError):
        misc.InfiniteSampler([1, 2], start_index=-1)

def test_infinite_sampler_in_dataloader():
    dataset = torch.arange(8)
    sampler = misc.InfiniteSampler(dataset, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=8)))
    assert batch.tolist() == _reference_stream(8, 0, 0.5, 8)

#----------------------------------------------------------------------------
# Parameters and buffers

class _Net(torch.nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.fc = torch.nn.Linear(3, width)
        self.register_buffer('stat', torch.zeros([width]))

    def forward(self, x):
        return self.fc(x) + self.stat

def test_params_and_buffers_listing():
    net = _Net()
    names = [name for name, _ in misc.named_params_and_buffers(net)]
    assert names == ['fc.weight', 'fc.bias', 'stat']
    assert [t.shape for t in misc.params_and_buffers(net)] == [(4, 3), (4,), (4,)]

def test_copy_params_and_buffers_copies_by_name():
    torch.manual_seed(0)
    src, dst = _Net(), _Net()
    src.stat.fill_(7)
    dst.fc.weight.requires_grad_(False)
    misc.copy_params_and_buffers(src, dst)
    for (name, a), (_, b) in zip(misc.named_params_and_buffers(src), misc.named_params_and_buffers(dst)):
        np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy(), err_msg=name)
    assert not dst.fc.weight.requires_grad and dst.fc.bias.requires_grad
    assert dst.fc.weight.data_ptr() != src.fc.weight.data_ptr()

def test_copy_params_and_buffers_partial_and_require_all():
    src = torch.nn.Module()
    src.fc = torch.nn.Linear(3, 4)
    dst = _Net()
    misc.copy_params_and_buffers(src, dst)  # 'stat' missing in src is fine by default
    np.testing.assert_array_equal(dst.fc.weight.detach().numpy(), src.fc.weight.detach().numpy())
    with pytest.raises(ValueError, match='stat'):
        misc.copy_params_and_buffers(src, dst, require_all=True)

def test_copy_params_and_buffers_shape_mismatch_is_clear_and_atomic():
    src, dst = _Net(width=8), _Net(width=4)
    before = dst.fc.weight.detach().clone()
    with pytest.raises(ValueError) as info:
        misc.copy_params_and_buffers(src, dst)
    message = str(info.value)
    assert 'fc.weight' in message and '[8, 3]' in message and '[4, 3]' in message
    assert '2 more' in message  # fc.bias and stat
    assert torch.equal(dst.fc.weight.detach(), before)

#----------------------------------------------------------------------------
# DDP helpers (single process)

def test_ddp_sync_plain_module_is_noop():
    net = _Net()
    for sync in (True, False):
        with misc.ddp_sync(net, sync):
            net(torch.ones([1, 3])).sum().backward()
    assert net.fc.weight.grad is not None

def test_check_ddp_consistency_without_process_group():
    misc.check_ddp_consistency(_Net())  # no process group: nothing to compare, must not raise

#----------------------------------------------------------------------------
# print_module_summary

class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.act = torch.nn.ReLU()
        self.register_buffer('noise', torch.zeros([5]))

    def forward(self, x):
        return self.act(self.conv(x))

class _Top(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.block = _Block()
        self.head = torch.nn.Linear(3, 2)

    def forward(self, x):
        y = self.block(x).mean(dim=[2, 3])
        return self.head(y), y.to(torch.float64)

def test_print_module_summary(capsys):
    net = _Top()
    x = torch.ones([4, 2, 6, 6])
    outputs = misc.print_module_summary(net, [x])
    expected = net(x)
    assert torch.equal(outputs[0], expected[0]) and torch.equal(outputs[1], expected[1])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.strip() and not line.startswith('---')}
    assert rows['_Top'][1:] == ['Parameters', 'Buffers', 'Output', 'shape', 'Datatype']
    assert rows['block.conv'][1:] == [str(2 * 3 * 9 + 3), '-', '[4,', '3,', '6,', '6]', 'float32']
    assert rows['block'][1:3] == ['-', '5']           # its own buffer; conv params counted on their row
    assert 'block.act' in rows                       # ReLU has a new output tensor
    assert rows['head'][1] == str(3 * 2 + 2)
    assert rows['<top-level>'][-3:] == ['[4,', '3]', 'float64']  # head's output was already listed
    total_params = sum(p.numel() for p in net.parameters())
    assert rows['Total'][1:3] == [str(total_params), '5']
    # No hooks remain.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())

def test_print_module_summary_max_nesting(capsys):
    net = _Top()
    misc.print_module_summary(net, [torch.ones([1, 2, 4, 4])], max_nesting=1)
    out = capsys.readouterr().out
    assert 'block.conv' not in out
    total_line = [line for line in out.splitlines() if line.startswith('Total')][0]
    assert total_line.split()[1] == str(sum(p.numel() for p in net.parameters()))

#----------------------------------------------------------------------------
# Real DDP over gloo (two processes)

_DDP_WORKER = textwrap.dedent('''
    import datetime, json, sys
    import torch
    from torch_utils import misc

    rank, port = int(sys.argv[1]), int(sys.argv[2])
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2,
                                         timeout=datetime.timedelta(seconds=30))
    result = {}
    torch.manual_seed(0)
    net = torch.nn.Linear(2, 1, bias=False)
    net.register_buffer('w_avg', torch.full([1], float(rank)))     # differs, but ignored by name
    net.register_buffer('nan_buf', torch.tensor([float('nan'), 1.0]))  # NaN equals NaN here
    misc.check_ddp_consistency(net, ignore_regex=r'.*\\.[^.]+_(avg|ema)')
    try:
        misc.check_ddp_consistency(net)
        result['unignored'] = 'ok'
    except RuntimeError as error:
        result['unignored'] = str(error)

    ddp = torch.nn.parallel.DistributedDataParallel(net)
    x = torch.full([1, 2], float(rank + 1))
    with misc.ddp_sync(ddp, sync=False):
        ddp(x).sum().backward()
    result['local_grad'] = net.weight.grad.tolist()
    net.weight.grad = None
    with misc.ddp_sync(ddp, sync=True):
        ddp(x).sum().backward()
    result['synced_grad'] = net.weight.grad.tolist()
    del ddp  # its reducer must go before the process group
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    print('RESULT ' + json.dumps(result), flush=True)
''')

def test_ddp_helpers_with_two_gloo_processes(tmp_path):
    script = tmp_path / 'ddp_worker.py'
    script.write_text(_DDP_WORKER)
    port = distributed.find_free_port()
    outputs = run_processes([[sys.executable, str(script), str(rank), str(port)] for rank in range(2)], timeout=90)
    results = []
    for returncode, out, err in outputs:
        assert returncode == 0, err[-3000:]
        [line] = [line for line in out.splitlines() if line.startswith('RESULT ')]
        results.append(json.loads(line[len('RESULT '):]))

    assert results[0]['unignored'] == 'ok'  # rank 0 always agrees with itself
    assert results[1]['unignored'] == 'Rank 1 holds different values than rank 0 for Linear.w_avg.'
    # d(sum(w . x))/dw = x: each rank's own input without sync, the mean over ranks (1.5) with sync.
    assert results[0]['local_grad'] == [[1.0, 1.0]] and results[1]['local_grad'] == [[2.0, 2.0]]
    assert results[0]['synced_grad'] == results[1]['synced_grad'] == [[1.5, 1.5]]

#----------------------------------------------------------------------------
