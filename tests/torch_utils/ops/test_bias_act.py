"""bias_act against closed-form float64 numpy oracles, plus first- and second-order gradchecks."""

import math

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act as bias_act_module
from torch_utils.ops.bias_act import activation_funcs, bias_act

SQRT2 = math.sqrt(2)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name -> (oracle(x, alpha), def_alpha, def_gain, cuda_idx, ref, has_2nd_grad)
EXPECTED = {
    'linear':   (lambda x, a: x,                                                     0,   1,     1, '',  False),
    'relu':     (lambda x, a: np.maximum(x, 0),                                      0,   SQRT2, 2, 'y', False),
    'lrelu':    (lambda x, a: np.where(x >= 0, x, a * x),                            0.2, SQRT2, 3, 'y', False),
    'tanh':     (lambda x, a: np.tanh(x),                                            0,   1,     4, 'y', True),
    'sigmoid':  (lambda x, a: _np_sigmoid(x),                                        0,   1,     5, 'y', True),
    'elu':      (lambda x, a: np.where(x > 0, x, np.expm1(x)),                       0,   1,     6, 'y', True),
    'selu':     (lambda x, a: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)), 0, 1,   7, 'y', True),
    'softplus': (lambda x, a: np.log1p(np.exp(x)),                                   0,   1,     8, 'y', True),
    'swish':    (lambda x, a: x * _np_sigmoid(x),                                    0,   SQRT2, 9, 'x', True),
}
ACTS = sorted(EXPECTED)


def _oracle(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    func, def_alpha, def_gain = EXPECTED[act][:3]
    x = np.asarray(x, dtype=np.float64)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + np.asarray(b, dtype=np.float64).reshape(shape)
    y = func(x, def_alpha if alpha is None else alpha)
    y = y * (def_gain if gain is None else gain)
    if clamp is not None:
        y = np.clip(y, -clamp, clamp)
    return y


def _away_from_kinks(shape, generator, dtype=torch.float64):
    """Values with |x| >= 0.2 so piecewise activations are differentiable with finite-difference eps."""
    x = torch.rand(shape, generator=generator, dtype=dtype) * 1.8 + 0.2
    sign = torch.where(torch.rand(shape, generator=generator) < 0.5, -1.0, 1.0).to(dtype)
    return x * sign


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def test_activation_table_matches_official_values():
    assert sorted(activation_funcs) == ACTS
    for name, (_, def_alpha, def_gain, cuda_idx, ref, has_2nd_grad) in EXPECTED.items():
        spec = activation_funcs[name]
        assert spec.def_alpha == pytest.approx(def_alpha)
        assert spec.def_gain == pytest.approx(def_gain)
        assert spec.cuda_idx == cuda_idx
        assert spec.ref == ref
        assert spec.has_2nd_grad == has_2nd_grad
        assert callable(spec.func)


@pytest.mark.parametrize('act', ACTS)
def test_default_alpha_and_gain(act, gen):
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64) * 2
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    y = bias_act(x, b, act=act)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y.numpy(), _oracle(x.numpy(), b.numpy(), act=act), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', ACTS)
def test_explicit_gain_alpha_clamp_float32(act, gen):
    x = torch.randn(3, 4, 6, generator=gen) * 3
    b = torch.randn(4, generator=gen)
    y = bias_act(x, b, act=act, alpha=0.3, gain=1.7, clamp=1.5)
    assert y.dtype == torch.float32
    expected = _oracle(x.numpy(), b.numpy(), act=act, alpha=0.3, gain=1.7, clamp=1.5)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert y.abs().max() <= 1.5


def test_lrelu_known_values():
    x = torch.tensor([[-1.0, 0.0, 2.0]])
    y = bias_act(x, act='lrelu', dim=1)
    torch.testing.assert_close(y, torch.tensor([[-0.2 * SQRT2, 0.0, 2 * SQRT2]]))
    y = bias_act(x, act='lrelu', alpha=0.5, gain=1)
    torch.testing.assert_close(y, torch.tensor([[-0.5, 0.0, 2.0]]))


def test_clamp_zero_gives_zero_and_none_disables():
    x = torch.tensor([-300.0, -1.0, 0.5, 400.0])
    assert torch.equal(bias_act(x, dim=0, clamp=0), torch.zeros(4))
    assert torch.equal(bias_act(x, dim=0, clamp=None), x)
    torch.testing.assert_close(bias_act(x, dim=0, clamp=256), torch.tensor([-256.0, -1.0, 0.5, 256.0]))


@pytest.mark.parametrize('shape,dim', [((5,), 0), ((4, 3), 0), ((4, 3), 1), ((2, 3, 4, 5), 0),
                                       ((2, 3, 4, 5), 2), ((2, 3, 4, 5), 3), ((2, 3, 4, 5), -1)])
def test_bias_broadcasts_along_dim(shape, dim, gen):
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    b = torch.randn(shape[dim], generator=gen, dtype=torch.float64)
    y = bias_act(x, b, dim=dim, act='lrelu')
    expected = _oracle(x.numpy(), b.numpy(), dim=dim % len(shape), act='lrelu')
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_channels_last_input(gen):
    x = torch.randn(2, 3, 4, 5, generator=gen).to(memory_format=torch.channels_last)
    b = torch.randn(3, generator=gen)
    y = bias_act(x, b, act='lrelu', clamp=1.0)
    np.testing.assert_allclose(y.numpy(), _oracle(x.numpy(), b.numpy(), act='lrelu', clamp=1.0), rtol=1e-5, atol=1e-6)


def test_impl_cuda_on_cpu_uses_reference(gen):
    x = torch.randn(2, 3, 4, generator=gen)
    b = torch.randn(3, generator=gen)
    assert torch.equal(bias_act(x, b, act='swish', impl='cuda'), bias_act(x, b, act='swish', impl='ref'))


def test_float16_linear_and_lrelu(gen):
    x = torch.randn(2, 3, 4, generator=gen).half()
    b = torch.randn(3, generator=gen).half()
    for act in ('linear', 'lrelu'):
        y = bias_act(x, b, act=act, clamp=2.0)
        assert y.dtype == torch.float16
        expected = _oracle(x.double().numpy(), b.double().numpy(), act=act, clamp=2.0)
        np.testing.assert_allclose(y.double().numpy(), expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('kwargs,exc', [
    (dict(b=torch.zeros(2, 3)), ValueError),                        # bias not 1-D
    (dict(b=torch.zeros(4)), ValueError),                           # wrong length for dim=1
    (dict(b=torch.zeros(3, dtype=torch.float64)), ValueError),      # dtype mismatch
    (dict(b=torch.zeros(3), dim=3), ValueError),                    # dim out of range
    (dict(clamp=-1), ValueError),                                   # negative clamp
    (dict(act='gelu_nope'), ValueError),                            # unknown activation
    (dict(impl='triton'), ValueError),                              # unknown impl
])
def test_invalid_inputs_raise(kwargs, exc):
    x = torch.zeros(2, 3, 4)
    with pytest.raises(exc):
        bias_act(x, **kwargs)


def test_non_tensor_input_raises():
    with pytest.raises(TypeError):
        bias_act(np.zeros((2, 3)))


@pytest.mark.parametrize('act', ACTS)
def test_gradcheck_and_gradgradcheck(act, gen):
    x = _away_from_kinks((2, 3, 4), gen).requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64).requires_grad_(True)  # zero bias keeps x away from kinks
    fn = lambda x, b: bias_act(x, b, act=act, alpha=0.3, gain=1.3)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_gradcheck_with_clamp_and_dim(gen):
    # Values chosen so |y| is far from the clamp boundary on both sides.
    x = _away_from_kinks((3, 2, 5), gen) * 2
    x = torch.where(x.abs() > 1.6, x.sign() * 3.0, x.clamp(-1.2, 1.2)).requires_grad_(True)
    b = torch.zeros(5, dtype=torch.float64).requires_grad_(True)
    fn = lambda x, b: bias_act(x, b, dim=2, act='tanh', gain=2.0, clamp=1.8)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_gradient_values_lrelu(gen):
    x = _away_from_kinks((4, 3), gen).requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    bias_act(x, b, act='lrelu').sum().backward()
    expected = np.where(x.detach().numpy() > 0, SQRT2, 0.2 * SQRT2)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(b.grad.numpy(), expected.sum(axis=0), rtol=1e-12)

