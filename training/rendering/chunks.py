"""Chunked evaluation: apply a function to slices of rays or points so memory is bounded by the chunk.

`run_in_chunks(fn, *tensors, chunk, dim=1, out_dim=None)` slices every input tensor along `dim` into
pieces of at most `chunk` entries, calls fn on each group of slices and concatenates the outputs
along `out_dim` (by default the same `dim`). Outputs may be a tensor or nested tuples, lists and
dicts of tensors (the structure must be the same for every chunk). For a fn that treats entries
along `dim` independently the result equals the unchunked call.
"""

import torch

# ----------------------------------------------------------------------------------------------


def _concat(outputs, dim):
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outputs, dim=dim)
    if isinstance(first, dict):
        return type(first)((key, _concat([out[key] for out in outputs], dim)) for key in first)
    if isinstance(first, (tuple, list)):
        items = [_concat([out[i] for out in outputs], dim) for i in range(len(first))]
        if isinstance(first, tuple) and hasattr(first, '_fields'):  # namedtuple
            return type(first)(*items)
        return type(first)(items)
    raise TypeError(f'run_in_chunks() can only concatenate tensors and tuples/lists/dicts of them, '
                    f'got {type(first).__name__}.')


def run_in_chunks(fn, *tensors, chunk, dim=1, out_dim=None):
    """fn(*tensors), evaluated on slices of at most `chunk` entries along `dim` and concatenated.

    All tensors must have the same size along `dim`. Outputs are concatenated along `out_dim`
    (default: `dim`), e.g. dim=1 for points [N, M, 3] and out_dim=2 for tri-plane features
    [N, 3, M, C]. chunk=None (or a chunk not smaller than that size) makes a single call with the
    unsliced tensors.
    """
    if not tensors:
        raise ValueError('run_in_chunks() needs at least one tensor.')
    if chunk is not None and (int(chunk) != chunk or chunk < 1):
        raise ValueError(f'chunk must be a positive integer or None, got {chunk}.')
    sizes = {t.shape[dim] for t in tensors}
    if len(sizes) != 1:
        raise ValueError(f'run_in_chunks() needs equal sizes along dim {dim}, got {sorted(sizes)}.')
    size = sizes.pop()
    if chunk is None or size <= chunk:
        return fn(*tensors)
    chunk = int(chunk)
    outputs = [fn(*(t.narrow(dim, start, min(chunk, size - start)) for t in tensors))
               for start in range(0, size, chunk)]
    return _concat(outputs, dim if out_dim is None else out_dim)
