"""Fused multiply-add `fma(a, b, c) = a * b + c` with broadcasting, as one `torch.addcmul`."""

import torch


def fma(a, b, c):
    """Return `a * b + c`; `a`, `b` and `c` broadcast against each other like ordinary arithmetic."""
    return _FusedMultiplyAdd.apply(a, b, c)


class _FusedMultiplyAdd(torch.autograd.Function):
    # The backward is written in differentiable ops, so double backward goes through autograd.

    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_shape = c.shape
        return out

    @staticmethod
    def backward(ctx, dout):
        a, b = ctx.saved_tensors
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _sum_to_shape(dout * b, a.shape)
        if ctx.needs_input_grad[1]:
            db = _sum_to_shape(dout * a, b.shape)
        if ctx.needs_input_grad[2]:
            dc = _sum_to_shape(dout, ctx.c_shape)
        return da, db, dc


def _sum_to_shape(x, shape):
    """Undo broadcasting: sum `x` over the dimensions that were expanded to reach its shape."""
    shape = torch.Size(shape)
    if x.shape == shape:
        return x
    extra = x.ndim - len(shape)
    dims = list(range(extra))
    dims += [extra + i for i, size in enumerate(shape) if size == 1 and x.shape[extra + i] != 1]
    if dims:
        x = x.sum(dim=dims, keepdim=True)
    return x.reshape(shape)
