"""Op outputs can be written in place while autograd records.

The official networks do `x = x.add_(noise)` and `x = y.add_(x)` on the results of conv2d_resample,
upfirdn2d and friends; autograd forbids that on a view returned by a custom Function, so no op may
return one. Each case checks the in-place add works and its gradient is the plain one.
"""

import pytest
import torch

from torch_utils.ops import bias_act, conv2d_resample, filtered_lrelu, fma, upfirdn2d

F4 = upfirdn2d.setup_filter([1, 3, 3, 1])
F12 = torch.ones(12) / 12

CASES = {
    'conv2d_resample up2': lambda x, w: conv2d_resample.conv2d_resample(x, w, f=F4, up=2, padding=1, flip_weight=False),
    'conv2d_resample up2 grouped': lambda x, w: conv2d_resample.conv2d_resample(
        x.reshape(1, -1, 8, 8), w.repeat(2, 1, 1, 1), f=F4, up=2, padding=1, groups=2, flip_weight=False),
    'conv2d_resample down2': lambda x, w: conv2d_resample.conv2d_resample(x, w, f=F4, down=2, padding=1),
    'conv2d_resample 1x1 up2': lambda x, w: conv2d_resample.conv2d_resample(x, w[:, :, :1, :1], f=F4, up=2),
    'upsample2d': lambda x, w: upfirdn2d.upsample2d(x, F4),
    'downsample2d': lambda x, w: upfirdn2d.downsample2d(x, F4),
    'filter2d': lambda x, w: upfirdn2d.filter2d(x, F4),
    'upfirdn2d crop': lambda x, w: upfirdn2d.upfirdn2d(x, None, padding=-1),
    'upfirdn2d decimate': lambda x, w: upfirdn2d.upfirdn2d(x, None, down=2),
    'bias_act': lambda x, w: bias_act.bias_act(x, torch.zeros(4), act='lrelu', clamp=1.0),
    'fma': lambda x, w: fma.fma(x, torch.full([1, 4, 1, 1], 2.0), x),
    'filtered_lrelu': lambda x, w: filtered_lrelu.filtered_lrelu(x, F12, F12, torch.zeros(4), up=2, down=2,
                                                                 padding=[11, 10, 11, 10]),
    'filtered_lrelu identity filters': lambda x, w: filtered_lrelu.filtered_lrelu(x, None, None, torch.zeros(4),
                                                                                  gain=1, slope=1),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_output_accepts_in_place_add(name):
    torch.manual_seed(0)
    x = torch.randn([2, 4, 8, 8], requires_grad=True)
    w = torch.randn([4, 4, 3, 3])
    y = CASES[name](x, w)
    assert y._base is None
    z = y.add_(1.0)
    g = torch.randn_like(z)
    (z * g).sum().backward()
    expected, = torch.autograd.grad((CASES[name](x, w) * g).sum(), x)
    torch.testing.assert_close(x.grad, expected)
