// Per-element arithmetic of the fused bias_act kernels: forward, first and second derivative.
//
// Plain C++ with no dependency at all, compiled for the GPU by bias_act_kernel.cu and for the host by
// the CPU tests (tests/torch_utils/ops/test_bias_act_cuda.py), which check every formula against
// PyTorch's autograd without a GPU.
//
// Notation: s = x + b is the pre-activation, f the activation, g the gain, c the clamp (c < 0: off),
// y = clamp(f(s) * g, -c, c) the output. The derivatives are written in terms of y for activations
// whose derivative follows from their output (so the backward pass keeps y, which the next layer
// keeps anyway), and in terms of s for the others (swish). That needs g > 0, which the Python front
// checks before choosing the kernel. An output at the clamp bound counts as clamped: its gradient is 0.

#pragma once

#if defined(__CUDACC__)
#define BIAS_ACT_HD __host__ __device__ __forceinline__
#else
#define BIAS_ACT_HD inline
#include <math.h>
#endif

namespace bias_act {

// Activation ids: the `cuda_idx` of torch_utils/ops/bias_act.py's table.
enum Activation { LINEAR = 1, RELU = 2, LRELU = 3, TANH = 4, SIGMOID = 5, ELU = 6, SELU = 7, SOFTPLUS = 8, SWISH = 9 };

// What a kernel computes: the output, dL/ds from dL/dy, or dL/ds of (dy * f'(s)) times its incoming gradient.
enum Mode { FORWARD = 0, GRAD1 = 1, GRAD2 = 2 };

constexpr float kSeluScale = 1.0507009873554804934193349852946f;
constexpr float kSeluAlpha = 1.6732632423543772848170429916717f;

// True when the activation's derivatives are computed from the pre-activation s rather than from y.
BIAS_ACT_HD bool uses_pre_activation(int act) { return act == SWISH; }

BIAS_ACT_HD float sigmoid(float s) { return 1.0f / (1.0f + expf(-s)); }

// f(s).
BIAS_ACT_HD float activate(int act, float s, float alpha) {
    switch (act) {
        case RELU: return s > 0.0f ? s : 0.0f;
        case LRELU: return s > 0.0f ? s : s * alpha;
        case TANH: return tanhf(s);
        case SIGMOID: return sigmoid(s);
        case ELU: return s > 0.0f ? s : expf(s) - 1.0f;
        case SELU: return s > 0.0f ? kSeluScale * s : kSeluScale * kSeluAlpha * (expf(s) - 1.0f);
        case SOFTPLUS: return s > 20.0f ? s : log1pf(expf(s));  // PyTorch's threshold: exact to float there
        case SWISH: return s * sigmoid(s);
        default: return s;  // LINEAR
    }
}

// f'(s) and f''(s) from s (pre-activation activations) or from f = y / g (the others).
BIAS_ACT_HD void derivatives(int act, float s, float f, float alpha, float* d1, float* d2) {
    switch (act) {
        case RELU: *d1 = f > 0.0f ? 1.0f : 0.0f; *d2 = 0.0f; return;
        case LRELU: *d1 = f > 0.0f ? 1.0f : alpha; *d2 = 0.0f; return;
        case TANH: *d1 = 1.0f - f * f; *d2 = -2.0f * f * *d1; return;
        case SIGMOID: *d1 = f * (1.0f - f); *d2 = *d1 * (1.0f - 2.0f * f); return;
        case ELU: *d1 = f > 0.0f ? 1.0f : f + 1.0f; *d2 = f > 0.0f ? 0.0f : f + 1.0f; return;
        case SELU: {
            const float tail = f + kSeluScale * kSeluAlpha;  // f'(s) = f''(s) = scale * alpha * e^s for s <= 0
            *d1 = f > 0.0f ? kSeluScale : tail; *d2 = f > 0.0f ? 0.0f : tail; return;
        }
        case SOFTPLUS: {
            const float sig = -expm1f(-f);  // sigmoid(s) = 1 - e^(-softplus(s))
            *d1 = sig; *d2 = sig * (1.0f - sig); return;
        }
        case SWISH: {
            const float sig = sigmoid(s);
            *d1 = sig + s * sig * (1.0f - sig);
            *d2 = sig * (1.0f - sig) * (2.0f + s * (1.0f - 2.0f * sig)); return;
        }
        default: *d1 = 1.0f; *d2 = 0.0f; return;  // LINEAR
    }
}

// One element. FORWARD: `s` is x + b, returns y. GRAD1 / GRAD2: `s` is x + b (read only when
// uses_pre_activation(act)), `y` the forward output, `dy` the incoming gradient; GRAD1 returns
// dy * g * f'(s), GRAD2 returns dy * g * f''(s), each 0 where the output was clamped.
BIAS_ACT_HD float element(int mode, int act, float s, float y, float dy, float alpha, float gain, float clamp) {
    if (mode == FORWARD) {
        float out = activate(act, s, alpha) * gain;
        if (clamp >= 0.0f)
            out = out > clamp ? clamp : (out < -clamp ? -clamp : out);
        return out;
    }
    if (uses_pre_activation(act))
        y = activate(act, s, alpha) * gain;  // for the clamp test below
    if (clamp >= 0.0f && fabsf(y) >= clamp)
        return 0.0f;
    float d1, d2;
    derivatives(act, s, y / gain, alpha, &d1, &d2);
    return dy * gain * (mode == GRAD1 ? d1 : d2);
}

}  // namespace bias_act
