"""Automatic mixed precision for the training loop: autocast forwards and dynamic loss scaling.

Only configs whose official recipe trains under `torch.cuda.amp` use it (GRAM: microsoft/GRAM
processes.py and train.py). StyleGAN-style networks keep their own float16 layers (`num_fp16_res`)
instead. The recipe, as GRAM runs it:
- the forward passes of G and D run under `torch.autocast` (float16 on CUDA);
- every backward starts from the loss times the current scale s (`torch.amp.GradScaler`, initial
  scale 2**16, growth x2 every 2000 finite steps, back-off x0.5 on a non-finite gradient);
- input gradients that enter a loss (R1) are taken of s * output and divided by s again;
- each network's gradients are unscaled before clipping, and its step is skipped when any of them
  is not finite;
- one scaler serves both networks and is updated once per training step; a scale below 1 is reset
  to 1 (train.py: `if scaler.get_scale() < 1: scaler.update(1.)`).

The loop owns one `MixedPrecision`; the loss reads the same object (`autocast()`, `scale_for_grad()`),
so that forward precision and scale agree. Disabled, every method is the identity of float32
training: the scale is the Python float 1.0, and no op is added to the graph.
"""

import contextlib

import torch

# Where `amp=True` takes effect, and the autocast dtype there; elsewhere the run trains in float32
# (DESIGN: the CPU runs fp32). Tests add the CPU with bfloat16 to run the same path.
AMP_DTYPES = {'cuda': torch.float16}


class MixedPrecision:
    def __init__(self, device, enabled=False, dtype=torch.float16, init_scale=2.0 ** 16, growth_interval=2000,
                 min_scale=1.0):
        self.device = torch.device(device)
        self.enabled = bool(enabled)
        self.dtype = dtype
        self.min_scale = float(min_scale)
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=init_scale, growth_interval=growth_interval,
                                           enabled=self.enabled)
        self._unit = torch.ones([], device=self.device)

    @classmethod
    def for_device(cls, device, requested):
        """The recipe's AMP where it applies (CUDA), float32 elsewhere; returns (instance, note or None)."""
        device = torch.device(device)
        if requested and device.type not in AMP_DTYPES:
            return cls(device, enabled=False), f'Mixed precision applies on CUDA only; training on {device.type} in float32.'
        return cls(device, enabled=requested, dtype=AMP_DTYPES.get(device.type, torch.float16)), None

    def autocast(self):
        """The context of a forward pass: autocast to `dtype`, or nothing."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def full_precision(self):
        """The context of a gradient taken inside a forward pass (R1): autocast off."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, enabled=False)

    def loss_scale(self):
        """The factor every loss is multiplied by before its backward: a device tensor, or 1.0."""
        if not self.enabled:
            return 1.0
        return self.scaler.scale(self._unit)

    def input_grads(self, output, inputs, **grad_kwargs):
        """torch.autograd.grad(output, inputs) computed as grad(s * output) / s, for losses on input gradients."""
        if not self.enabled:
            return torch.autograd.grad(outputs=[output], inputs=inputs, **grad_kwargs)
        scale = self.loss_scale()
        with self.full_precision():
            grads = torch.autograd.grad(outputs=[output * scale], inputs=inputs, **grad_kwargs)
            return tuple(grad / scale for grad in grads)

    def unscale_(self, optimizer):
        """Divide the gradients of `optimizer`'s parameters by the scale (before clipping them)."""
        if self.enabled:
            self.loss_scale()  # GradScaler creates its scale tensor lazily, in scale()
            self.scaler.unscale_(optimizer)

    def step(self, optimizer):
        """optimizer.step(), skipped while its unscaled gradients hold an inf or NaN."""
        if self.enabled:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self):
        """Once per training step, after every network's step: grow or back off, then GRAM's floor."""
        if not self.enabled:
            return
        self.scaler.update()
        if self.scaler.get_scale() < self.min_scale:
            self.scaler.update(self.min_scale)

    def get_scale(self):
        return self.scaler.get_scale() if self.enabled else 1.0

    def state_dict(self):
        return self.scaler.state_dict() if self.enabled else {}

    def load_state_dict(self, state):
        if self.enabled and state:
            self.scaler.load_state_dict(state)
