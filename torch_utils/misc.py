"""Small helpers shared by networks, ops and the training loop.

The public names here are part of the compatibility surface: the network sources embedded in
official StyleGAN2-ADA / StyleGAN3 / EG3D pickles call `assert_shape`, `profiled_function`,
`suppress_tracer_warnings`, `constant` and friends with these exact signatures.
"""

import contextlib
import functools
import re
import warnings

import numpy as np
import torch

import dnnlib

#----------------------------------------------------------------------------

def label_kind(kind, c_dim):
    """The label kind a generator declares: 'none', 'class' or 'camera' (25 floats); None picks 'class' or 'none'.

    Raises ValueError for a kind that does not fit `c_dim`. Generators call it with their
    `label_kind` argument (read by `training.capabilities`).
    """
    if kind is None:
        return 'class' if c_dim else 'none'
    if kind not in ('none', 'class', 'camera'):
        raise ValueError(f"label_kind={kind!r} is not one of 'none', 'class', 'camera'.")
    if (kind == 'none') != (c_dim == 0) or (kind == 'camera' and c_dim != 25):
        raise ValueError(f'label_kind={kind!r} does not fit c_dim={c_dim} (a camera label has 25 floats).')
    return kind

#----------------------------------------------------------------------------
# Cached constant tensors.

_constant_cache = dict()

def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """Return a cached tensor holding `value` (broadcast to `shape`); callers must not modify it.

    Ops call this inside their forward pass, so building the same small tensor again on every call
    (and copying it to the GPU) would cost more than the op itself.
    """
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device('cpu') if device is None else torch.device(device)
    if memory_format is None:
        memory_format = torch.contiguous_format

    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor = tensor.expand(shape)
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

#----------------------------------------------------------------------------
# Thin aliases kept under their historical names.

nan_to_num = torch.nan_to_num
symbolic_assert = torch._assert

#----------------------------------------------------------------------------
# Shape checks that also work under torch.jit.trace.

@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence torch.jit.TracerWarning inside the block (e.g. around `int(x.shape[0])`)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        yield

def assert_shape(tensor, ref_shape):
    """Raise AssertionError unless `tensor.shape` matches `ref_shape`; None entries match any size."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)}')
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor) or isinstance(size, torch.Tensor):
            # Sizes are tensors while tracing; a Python comparison would be baked into the trace.
            with suppress_tracer_warnings():
                device = ref_size.device if isinstance(ref_size, torch.Tensor) else size.device
                symbolic_assert(torch.equal(torch.as_tensor(size, device=device), torch.as_tensor(ref_size, device=device)),
                                f'Wrong size for dimension {idx}: expected {ref_size}')
        elif size != ref_size:
            raise AssertionError(f'Wrong size for dimension {idx}: got {size}, expected {ref_size}')

#----------------------------------------------------------------------------
# Profiler annotation.

def profiled_function(fn):
    """Decorator: run `fn` inside a profiler range named after it."""
    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return decorator

#----------------------------------------------------------------------------
# Data sampling.

class InfiniteSampler(torch.utils.data.Sampler):
    """Endless stream of dataset indices, split across replicas.

    The order is a seeded permutation that keeps changing: after position `i` is read it is swapped
    with a random earlier position inside a sliding window of `window_size * len(dataset)` items.
    Position `p` of the global stream goes to the replica with `p % num_replicas == rank`.

    `start_index` is the number of stream positions already consumed by all replicas together
    (i.e. the number of images the training loop has seen); starting there yields exactly what an
    uninterrupted run would have yielded next, so resumed training sees the same data.
    """

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5, start_index=0):
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler needs a non-empty dataset.')
        if num_replicas <= 0:
            raise ValueError(f'num_replicas must be positive, got {num_replicas}.')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'rank must be in [0, {num_replicas}), got {rank}.')
        if not 0 <= window_size <= 1:
            raise ValueError(f'window_size must be in [0, 1], got {window_size}.')
        if start_index < 0:
            raise ValueError(f'start_index must be non-negative, got {start_index}.')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.start_index = int(start_index)

    def __iter__(self):
        order = np.arange(len(self.dataset))
        rnd = None
        window = 0
        if self.shuffle:
            rnd = np.random.RandomState(self.seed)
            rnd.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        idx = 0
        if self.start_index > 0:
            order = self._fast_forward(order, rnd, window, self.start_index)
            idx = self.start_index
        while True:
            i = idx % order.size
            if idx % self.num_replicas == self.rank:
                yield order[i]
            if window >= 2:
                j = (i - rnd.randint(window)) % order.size
                order[i], order[j] = order[j], order[i]
            idx += 1

    @staticmethod
    def _fast_forward(order, rnd, window, count, chunk=1 << 20):
        # Replays `count` swaps; drawing the offsets in bulk consumes the RNG exactly like one draw per step.
        if window < 2:
            return order
        order = order.tolist()
        size = len(order)
        idx = 0
        while idx < count:
            offsets = rnd.randint(window, size=min(chunk, count - idx)).tolist()
            for offset in offsets:
                i = idx % size
                j = (i - offset) % size
                order[i], order[j] = order[j], order[i]
                idx += 1
        return np.asarray(order)

#----------------------------------------------------------------------------
# Parameters and buffers.

def params_and_buffers(module):
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())

def named_params_and_buffers(module):
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())

def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy every tensor of `dst_module` that `src_module` has under the same name.

    All names are checked before anything is copied, so a mismatch leaves `dst_module` untouched.
    Raises ValueError when a shared name has different shapes (e.g. resuming from a pickle trained at
    another resolution or channel base), or, with `require_all=True`, when `src_module` lacks a name.
    """
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    src_tensors = dict(named_params_and_buffers(src_module))
    dst_tensors = named_params_and_buffers(dst_module)

    if require_all:
        missing = [name for name, _ in dst_tensors if name not in src_tensors]
        if missing:
            raise ValueError(f'Source module lacks {len(missing)} tensor(s) that the destination needs: '
                             f'{_preview(missing)}.')
    mismatched = [(name, tuple(src_tensors[name].shape), tuple(tensor.shape)) for name, tensor in dst_tensors
                  if name in src_tensors and src_tensors[name].shape != tensor.shape]
    if mismatched:
        name, src_shape, dst_shape = mismatched[0]
        others = f' ({len(mismatched) - 1} more mismatched: {_preview([m[0] for m in mismatched[1:]])})' if len(mismatched) > 1 else ''
        raise ValueError(f'Cannot copy tensor "{name}": source shape {list(src_shape)} differs from destination '
                         f'shape {list(dst_shape)}{others}; the two networks were built with different options.')

    with torch.no_grad():
        for name, tensor in dst_tensors:
            if name in src_tensors:
                tensor.copy_(src_tensors[name].detach()).requires_grad_(tensor.requires_grad)

def _preview(names, limit=5):
    shown = ', '.join(names[:limit])
    return shown + (', ...' if len(names) > limit else '')

#----------------------------------------------------------------------------
# DistributedDataParallel helpers.

@contextlib.contextmanager
def ddp_sync(module, sync):
    """Skip DDP gradient all-reduce inside the block when `sync` is False (gradient accumulation)."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield

def check_ddp_consistency(module, ignore_regex=None):
    """Raise RuntimeError on any rank whose parameters or buffers differ from rank 0's.

    Names are matched as `<ClassName>.<tensor name>` against `ignore_regex` (full match). NaN equals
    NaN here. Does nothing when torch.distributed is not initialised.
    """
    assert isinstance(module, torch.nn.Module)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    mismatched = []
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        local = tensor.detach()
        reference = local.clone()
        torch.distributed.broadcast(tensor=reference, src=0)
        equal = local == reference
        if local.is_floating_point() or local.is_complex():
            equal |= local.isnan() & reference.isnan()
        if not bool(equal.all()):
            mismatched.append(fullname)
    # Raise only after the loop: every rank must issue the same broadcasts or the others hang.
    if mismatched:
        rank = torch.distributed.get_rank()
        raise RuntimeError(f'Rank {rank} holds different values than rank 0 for {_preview(mismatched)}.')

#----------------------------------------------------------------------------
# Module summary table.

def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Run `module(*inputs)`, print one row per submodule (parameters, buffers, output shapes, dtypes)
    down to `max_nesting` levels, print the totals, and return the outputs."""
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    entries = []
    depth = [0]

    def pre_hook(_mod, _inputs):
        depth[0] += 1

    def post_hook(mod, _inputs, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            entries.append(dnnlib.EasyDict(mod=mod, outputs=_flatten_tensors(outputs)))

    hooks = [mod.register_forward_pre_hook(pre_hook) for mod in module.modules()]
    hooks += [mod.register_forward_hook(post_hook) for mod in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    # Attribute each tensor to the first (innermost) entry that reaches it, so nothing is counted twice.
    seen = set()
    for entry in entries:
        entry.params = [t for t in entry.mod.parameters() if id(t) not in seen]
        entry.buffers = [t for t in entry.mod.buffers() if id(t) not in seen]
        entry.outputs = [t for t in entry.outputs if id(t) not in seen]
        seen |= {id(t) for t in entry.params + entry.buffers + entry.outputs}
    if skip_redundant:
        entries = [e for e in entries if e.params or e.buffers or e.outputs]

    names = {mod: name for name, mod in module.named_modules()}
    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype']]
    rows += [['---'] * len(rows[0])]
    param_total = buffer_total = 0
    for entry in entries:
        name = names.get(entry.mod, '') or '<top-level>'
        num_params = sum(t.numel() for t in entry.params)
        num_buffers = sum(t.numel() for t in entry.buffers)
        shapes = [str(list(t.shape)) for t in entry.outputs]
        dtypes = [str(t.dtype).split('.')[-1] for t in entry.outputs]
        rows.append([name + (':0' if len(entry.outputs) >= 2 else ''),
                     str(num_params) if num_params else '-',
                     str(num_buffers) if num_buffers else '-',
                     (shapes + ['-'])[0],
                     (dtypes + ['-'])[0]])
        for idx in range(1, len(entry.outputs)):
            rows.append([name + f':{idx}', '-', '-', shapes[idx], dtypes[idx]])
        param_total += num_params
        buffer_total += num_buffers
    rows += [['---'] * len(rows[0])]
    rows += [['Total', str(param_total), str(buffer_total), '-', '-']]

    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)).rstrip())
    print()
    return outputs

def _flatten_tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in _flatten_tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _flatten_tensors(item)]
    return []

#----------------------------------------------------------------------------
