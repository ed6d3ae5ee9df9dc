// PyTorch binding of the bias_act kernels: argument checks, output allocation, the current stream.

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bias_act.h"
#include "kernel_binding.h"
#include "bias_act_math.h"

namespace {


// Inputs a mode does not use are passed as empty tensors (the Python front never calls the kernel on
// an empty x).
bool given(const torch::Tensor& t) { return t.defined() && t.numel() > 0; }

void check_like(const torch::Tensor& t, const torch::Tensor& x, const char* name) {
    if (!given(t))
        return;
    TORCH_CHECK(t.is_cuda() && t.device() == x.device(), "bias_act: ", name, " must be on the device of x");
    TORCH_CHECK(t.scalar_type() == x.scalar_type(), "bias_act: ", name, " must have the dtype of x");
    TORCH_CHECK(t.sizes() == x.sizes() && t.strides() == x.strides(), "bias_act: ", name,
                " must have the shape and memory layout of x");
}

// mode 0: returns clamp(act(x + b) * gain); modes 1 and 2: the derivatives described in
// bias_act_math.h, from `dy` and the saved tensors (x for pre-activation activations, else y).
// `like` is any of the dense tensors (it gives shape, layout and device); the others may be empty.
torch::Tensor bias_act_cuda(torch::Tensor like, torch::Tensor x, torch::Tensor b, torch::Tensor y, torch::Tensor dy,
                            int64_t dim, int64_t act, int64_t mode, double alpha, double gain, double clamp) {
    TORCH_CHECK(like.is_cuda(), "bias_act: the CUDA kernel needs CUDA tensors");
    TORCH_CHECK(like.is_non_overlapping_and_dense(), "bias_act: x must be dense (contiguous in some dimension order)");
    TORCH_CHECK(like.numel() > 0, "bias_act: the CUDA kernel needs a non-empty x");
    check_like(x, like, "x");
    check_like(y, like, "y");
    check_like(dy, like, "dy");
    TORCH_CHECK(mode >= 0 && mode <= 2, "bias_act: mode must be 0, 1 or 2");
    TORCH_CHECK(mode != 0 || given(x), "bias_act: the forward needs x");
    TORCH_CHECK(mode == 0 || given(dy), "bias_act: the derivatives need dy");
    TORCH_CHECK(mode == 0 || given(bias_act::uses_pre_activation(act) ? x : y), "bias_act: the derivatives of this "
                "activation need the saved ", bias_act::uses_pre_activation(act) ? "input x" : "output y");
    TORCH_CHECK(gain > 0, "bias_act: the CUDA kernel needs gain > 0");
    int64_t bias_stride = 1, bias_size = 1;
    if (given(b)) {
        TORCH_CHECK(b.is_cuda() && b.device() == like.device() && b.scalar_type() == like.scalar_type(),
                    "bias_act: b must be on the device of x and have its dtype");
        TORCH_CHECK(b.dim() == 1 && b.is_contiguous(), "bias_act: b must be a contiguous 1-D tensor");
        TORCH_CHECK(dim >= 0 && dim < like.dim() && b.numel() == like.size(dim), "bias_act: b must have x.shape[dim] elements");
        bias_stride = like.stride(dim);
        bias_size = like.size(dim);
    }

    const c10::cuda::OptionalCUDAGuard guard(like.device());
    torch::Tensor out = torch::empty_like(like);  // keeps the dense layout of `like`
    bias_act::Params p;
    p.x = given(x) ? x.data_ptr() : nullptr;
    p.b = given(b) ? b.data_ptr() : nullptr;
    p.y = given(y) ? y.data_ptr() : nullptr;
    p.dy = given(dy) ? dy.data_ptr() : nullptr;
    p.out = out.data_ptr();
    p.n = like.numel();
    p.bias_stride = bias_stride;
    p.bias_size = bias_size;
    p.act = static_cast<int>(act);
    p.mode = static_cast<int>(mode);
    p.alpha = static_cast<float>(alpha);
    p.gain = static_cast<float>(gain);
    p.clamp = static_cast<float>(clamp);
    kernel_binding::check_launch(bias_act::launch(p, kernel_binding::dtype_of(like, "bias_act"),
                                                 c10::cuda::getCurrentCUDAStream()), "bias_act");
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act", &bias_act_cuda, "Fused bias + activation + gain + clamp and its derivatives (CUDA)");
}
