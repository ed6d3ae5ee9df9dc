"""The reference paths give the same values and gradients on a CUDA device as on the CPU.

Marked `gpu`: skipped without CUDA (run with `make test PYTEST_ARGS="-m gpu"` on a GPU machine).
"""

import numpy as np
import pytest
import torch

from torch_utils.ops import bias_act, conv2d_resample, filtered_lrelu, upfirdn2d

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def exact_cuda_math():
    # TF32 would make CUDA convolutions differ from the CPU by ~1e-3; compare true fp32 results.
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _lowpass(taps):
    import scipy.signal
    return torch.as_tensor(scipy.signal.firwin(taps, 0.4), dtype=torch.float32)


CASES = {
    "upsample2d_full": lambda x: upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device)),
    "downsample2d_full": lambda x: upfirdn2d.downsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device)),
    "upfirdn2d_separable": lambda x: upfirdn2d.upfirdn2d(x, _lowpass(12).to(x.device), up=2, down=1, padding=[5, 6, 4, 7]),
    "filtered_lrelu_up2_down2": lambda x: filtered_lrelu.filtered_lrelu(
        x, fu=_lowpass(12).to(x.device), fd=_lowpass(12).to(x.device), b=torch.linspace(-1, 1, x.shape[1], device=x.device),
        up=2, down=2, padding=[10, 10, 10, 10], clamp=0.5),
    "bias_act_lrelu": lambda x: bias_act.bias_act(x, torch.linspace(-1, 1, x.shape[1], device=x.device), act="lrelu", clamp=0.5),
    "conv2d_resample_up": lambda x: conv2d_resample.conv2d_resample(
        x, torch.linspace(-1, 1, 5 * 8 * 9, device=x.device).reshape(5, 8, 3, 3),
        f=upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device), up=2, padding=1, flip_weight=False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_matches_cpu(name):
    op = CASES[name]
    x_cpu = torch.randn(2, 8, 20, 24, generator=torch.Generator().manual_seed(0), requires_grad=True)
    x_gpu = x_cpu.detach().cuda().requires_grad_(True)
    y_cpu, y_gpu = op(x_cpu), op(x_gpu)
    scale = y_cpu.abs().max().item()
    np.testing.assert_allclose(y_gpu.detach().cpu().numpy(), y_cpu.detach().numpy(), atol=1e-5 * scale, rtol=0)
    weights = torch.randn(y_cpu.shape, generator=torch.Generator().manual_seed(1))
    (g_cpu,) = torch.autograd.grad((y_cpu * weights).sum(), x_cpu)
    (g_gpu,) = torch.autograd.grad((y_gpu * weights.cuda()).sum(), x_gpu)
    np.testing.assert_allclose(g_gpu.cpu().numpy(), g_cpu.numpy(), atol=1e-4 * g_cpu.abs().max().item(), rtol=0)
