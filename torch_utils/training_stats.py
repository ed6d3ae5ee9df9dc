"""Cheap, process-aware statistics for the training loop.

Anywhere in the code, `report(name, value)` adds the elements of `value` to three running moments
(count, sum, sum of squares) kept in float64 on the tensor's own device, so reporting never forces a
GPU sync. Once per tick the training loop calls `Collector.update()`, which moves the moments to one
device, sums them over all processes with a single all_reduce, and exposes num / mean / std per name.

Every process must report the same names in the same order (use `report0` for values that only
rank 0 has), and every process must call `Collector.update()` together, because both steps are
collective when torch.distributed is initialised.

A non-finite value (NaN or ±inf) makes the mean and std of its interval NaN instead of being hidden;
it is counted apart from the sums, so later intervals are unaffected.
"""

import re

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

_num_moments = 4                # [count, sum, sum of squares, count of non-finite values]
_counter_dtype = torch.float64  # float32 sums lose precision after a few million samples

_rank = 0
_sync_device = None             # device for the all_reduce; None = CPU tensors (gloo)
_sync_called = False
_counters = dict()              # name => device => running moments since the last sync
_cumulative = dict()            # name => moments summed over all processes since start-up (CPU)

#----------------------------------------------------------------------------

def init_multiprocessing(rank, sync_device):
    """Declare this process's rank and the device used to reduce statistics across processes.

    Call before the first `Collector.update()`. `sync_device` must be a CUDA device with the NCCL
    backend; None reduces CPU tensors, which the gloo backend supports.
    """
    global _rank, _sync_device
    if _sync_called:
        raise RuntimeError('training_stats.init_multiprocessing() must be called before the first Collector.update().')
    _rank = int(rank)
    _sync_device = None if sync_device is None else torch.device(sync_device)

def report(name, value):
    """Add the elements of `value` (tensor, array, number or sequence) to the statistic `name`; return `value`."""
    if name not in _counters:
        _counters[name] = dict()  # register the name even for empty values, so ranks stay aligned

    elems = torch.as_tensor(value)
    if elems.numel() == 0:
        return value
    elems = elems.detach().flatten()
    if elems.device.type == 'mps':
        elems = elems.cpu()  # MPS has no float64
    elems = elems.to(_counter_dtype)
    # Non-finite values are counted apart instead of entering the sums: one NaN would otherwise stay
    # in the cumulative sums forever and turn every later interval's mean into NaN.
    finite = torch.isfinite(elems)
    finite_elems = torch.where(finite, elems, torch.zeros_like(elems))
    moments = torch.stack([
        torch.ones_like(elems).sum(),
        finite_elems.sum(),
        finite_elems.square().sum(),
        (~finite).to(_counter_dtype).sum(),
    ])

    counters = _counters[name]
    if moments.device not in counters:
        counters[moments.device] = torch.zeros_like(moments)
    counters[moments.device].add_(moments)
    return value

def report0(name, value):
    """Like `report`, but only rank 0's values count; other ranks still register the name."""
    report(name, value if _rank == 0 else [])
    return value

#----------------------------------------------------------------------------

def _distributed_world_size():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1

def _sync(names):
    """Fold the local counters of `names` into the global cumulative moments; collective when distributed."""
    global _sync_called
    if len(names) == 0:
        return []
    _sync_called = True
    device = _sync_device
    if device is None:
        device = torch.device('cpu')
        if _distributed_world_size() > 1 and torch.distributed.get_backend() == 'nccl':
            device = torch.device('cuda', torch.cuda.current_device())  # NCCL cannot reduce CPU tensors

    deltas = []
    for name in names:
        delta = torch.zeros([_num_moments], dtype=_counter_dtype, device=device)
        for counter in _counters[name].values():
            delta.add_(counter.to(device))
            counter.zero_()
        deltas.append(delta)
    deltas = torch.stack(deltas)

    if _distributed_world_size() > 1:
        torch.distributed.all_reduce(deltas)

    deltas = deltas.cpu()
    for idx, name in enumerate(names):
        if name not in _cumulative:
            _cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
        _cumulative[name].add_(deltas[idx])
    return [(name, _cumulative[name]) for name in names]

#----------------------------------------------------------------------------

class Collector:
    """Per-interval view of the reported statistics whose names fully match `regex`.

    `update()` captures everything reported since the previous `update()` (or since construction).
    With `keep_previous=True`, a name that received nothing in the latest interval keeps the values
    of the interval before. Construction and `update()` are collective operations.
    """

    def __init__(self, regex='.*', keep_previous=True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._cumulative = dict()
        self._moments = dict()
        self.update()
        self._moments.clear()

    def names(self):
        """Names reported so far (by anyone in this process) that match the regex, in report order."""
        return [name for name in _counters if self._regex.fullmatch(name)]

    def update(self):
        if not self._keep_previous:
            self._moments.clear()
        for name, cumulative in _sync(self.names()):
            if name not in self._cumulative:
                self._cumulative[name] = torch.zeros([_num_moments], dtype=_counter_dtype)
            delta = cumulative - self._cumulative[name]
            self._cumulative[name].copy_(cumulative)
            if float(delta[0]) != 0:
                self._moments[name] = delta

    def _check_name(self, name):
        if not self._regex.fullmatch(name):
            raise KeyError(f'Statistic "{name}" does not match this collector\'s regex "{self._regex.pattern}".')

    def num(self, name):
        """Number of scalars reported for `name` in the latest interval."""
        self._check_name(name)
        if name not in self._moments:
            return 0
        return int(self._moments[name][0])

    def mean(self, name):
        """Mean of the latest interval; NaN when nothing was reported."""
        self._check_name(name)
        count = self.num(name)
        if count == 0 or self._moments[name][3] > 0:
            return float('nan')
        return float(self._moments[name][1] / count)

    def std(self, name):
        """Population standard deviation (numpy's default) of the latest interval; NaN when undefined."""
        count = self.num(name)
        if count == 0:
            return float('nan')
        mean = self.mean(name)
        if not np.isfinite(mean):
            return float('nan')
        if count == 1:
            return 0.0
        raw_var = float(self._moments[name][2] / count)
        return float(np.sqrt(max(raw_var - mean * mean, 0.0)))

    def as_dict(self):
        """Map each name with data in the latest interval to EasyDict(num, mean, std), e.g. for stats.jsonl."""
        stats = dnnlib.EasyDict()
        for name in self.names():
            if self.num(name) > 0:
                stats[name] = dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
        return stats

    def __getitem__(self, name):
        return self.mean(name)

#----------------------------------------------------------------------------
