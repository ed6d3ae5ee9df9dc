"""training.mixed_precision: GRAM's AMP recipe (autocast + one GradScaler), run on the CPU.

The loop enables it on CUDA only; here the same object runs on the CPU, with bfloat16 autocast where a
dtype matters. Expected values are the GradScaler rules (growth x2 after growth_interval finite steps,
back-off x0.5 and a skipped step on a non-finite gradient) and GRAM's floor (train.py: "if
scaler.get_scale() < 1: scaler.update(1.)").
"""

import torch

from training.mixed_precision import MixedPrecision


def _model_and_optimizer():
    model = torch.nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def _train_step(amp, model, opt, inf=False):
    opt.zero_grad(set_to_none=True)
    loss = model(torch.ones([4, 3])).square().mean()
    loss.mul(amp.loss_scale()).backward()
    if inf:
        model.weight.grad[0, 0] = float('inf')
    amp.unscale_(opt)
    amp.step(opt)
    amp.update()


def test_disabled_is_plain_float32_training():
    amp = MixedPrecision('cpu', enabled=False)
    assert amp.loss_scale() == 1.0 and isinstance(amp.loss_scale(), float) and amp.get_scale() == 1.0
    model, opt = _model_and_optimizer()
    with amp.autocast():
        assert model(torch.ones([1, 3])).dtype == torch.float32
    before = model.weight.detach().clone()
    _train_step(amp, model, opt)
    assert not torch.equal(model.weight, before) and amp.state_dict() == {}


def test_only_cuda_gets_amp_and_the_cpu_says_so():
    amp, note = MixedPrecision.for_device('cpu', True)
    assert not amp.enabled and note == 'Mixed precision applies on CUDA only; training on cpu in float32.'
    amp, note = MixedPrecision.for_device('cpu', False)
    assert not amp.enabled and note is None


def test_autocast_runs_the_forward_in_the_low_precision_dtype_and_R1_grads_in_float32():
    amp = MixedPrecision('cpu', enabled=True, dtype=torch.bfloat16)
    model = torch.nn.Linear(3, 2)
    x = torch.randn([4, 3], requires_grad=True)
    with amp.autocast():
        out = model(x)
        assert out.dtype == torch.bfloat16
        (grad,) = amp.input_grads(out.float().sum(), [x], create_graph=True)
    assert grad.dtype == torch.float32
    # d(sum(x W^T + b))/dx = column sums of W for every row; bfloat16 weights give 3 significant digits.
    expected = model.weight.detach().sum(0).expand(4, 3)
    torch.testing.assert_close(grad, expected, rtol=1e-2, atol=1e-2)


def test_a_nonfinite_gradient_skips_the_step_and_halves_the_scale_down_to_grams_floor_of_1():
    amp = MixedPrecision('cpu', enabled=True, init_scale=4.0)
    model, opt = _model_and_optimizer()
    before = model.weight.detach().clone()
    _train_step(amp, model, opt, inf=True)
    assert torch.equal(model.weight, before) and amp.get_scale() == 2.0
    _train_step(amp, model, opt, inf=True)
    assert amp.get_scale() == 1.0
    _train_step(amp, model, opt, inf=True)  # 0.5 < 1: reset to 1
    assert torch.equal(model.weight, before) and amp.get_scale() == 1.0


def test_finite_steps_update_like_unscaled_sgd_and_grow_the_scale_every_growth_interval():
    amp = MixedPrecision('cpu', enabled=True, init_scale=2.0 ** 10, growth_interval=3)
    model, opt = _model_and_optimizer()
    plain = torch.nn.Linear(3, 2)
    plain.load_state_dict(model.state_dict())
    plain_opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    scales = []
    for _ in range(4):
        _train_step(amp, model, opt)
        plain_opt.zero_grad()
        plain(torch.ones([4, 3])).square().mean().backward()
        plain_opt.step()
        scales.append(amp.get_scale())
    assert scales == [2.0 ** 10, 2.0 ** 10, 2.0 ** 11, 2.0 ** 11]
    torch.testing.assert_close(model.weight, plain.weight, rtol=1e-6, atol=1e-7)


def test_state_round_trips_for_exact_resume():
    amp = MixedPrecision('cpu', enabled=True, init_scale=8.0, growth_interval=5)
    model, opt = _model_and_optimizer()
    _train_step(amp, model, opt, inf=True)
    _train_step(amp, model, opt)
    restored = MixedPrecision('cpu', enabled=True)
    restored.load_state_dict(amp.state_dict())
    assert restored.get_scale() == 4.0 and restored.state_dict() == amp.state_dict()
