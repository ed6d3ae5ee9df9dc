"""fma against numpy float64 and closed-form broadcast-reduced gradients."""

import numpy as np
import pytest
import torch

from torch_utils.ops.fma import fma

SHAPES = [
    ((2, 3, 4), (2, 3, 4), (2, 3, 4)),
    ((2, 1, 4), (1, 3, 1), (4,)),
    ((3, 1), (2, 1, 4), (1,)),
    ((4,), (2, 3, 4), (2, 3, 1)),
    ((), (2, 3), (3,)),
]


def _reduce_to(g, shape):
    """Closed-form inverse of numpy broadcasting."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True).reshape(shape)


def _inputs(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64, requires_grad=True) for s in shapes]


@pytest.mark.parametrize('shapes', SHAPES)
def test_forward_matches_numpy(shapes):
    a, b, c = _inputs(shapes)
    out = fma(a, b, c)
    expected = a.detach().numpy() * b.detach().numpy() + c.detach().numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize('shapes', SHAPES)
def test_backward_reduces_to_input_shapes(shapes):
    a, b, c = _inputs(shapes, seed=1)
    out = fma(a, b, c)
    dout = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out.backward(dout)
    an, bn, dn = a.detach().numpy(), b.detach().numpy(), dout.numpy()
    np.testing.assert_allclose(a.grad.numpy(), _reduce_to(dn * bn, an.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), _reduce_to(dn * an, bn.shape), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.grad.numpy(), _reduce_to(dn, shapes[2]), rtol=1e-12, atol=1e-12)
    assert a.grad.shape == a.shape and b.grad.shape == b.shape and c.grad.shape == c.shape


@pytest.mark.parametrize('shapes', SHAPES)
def test_gradcheck_and_gradgradcheck(shapes):
    inputs = _inputs(shapes, seed=3)
    assert torch.autograd.gradcheck(fma, inputs)
    assert torch.autograd.gradgradcheck(fma, inputs)


def test_partial_requires_grad():
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 1, generator=gen, dtype=torch.float64)
    fma(a, b, c).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), a.numpy().sum(axis=0), rtol=1e-12)
    assert a.grad is None and c.grad is None
