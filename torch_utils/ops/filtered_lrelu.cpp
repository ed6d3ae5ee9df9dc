// PyTorch binding of the fused filtered_lrelu kernel: argument checks, output and sign-bit allocation,
// the current stream.

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "filtered_lrelu.h"
#include "kernel_binding.h"

namespace {


void check_filter(const torch::Tensor& f, const torch::Tensor& x, const char* name) {
    TORCH_CHECK(f.is_cuda() && f.device() == x.device() && f.scalar_type() == torch::kFloat32 && f.dim() == 2 &&
                f.is_contiguous(), "filtered_lrelu: ", name, " must be a contiguous 2-D float32 tensor on the device of x");
}

// Returns (out, bits); bits is an empty tensor unless `want_bits`. The up pass (fu, up, padding,
// up_gain = up^2 * gain) maps x to the hi_h x hi_w signal the activation runs on; the down pass (fd,
// down, no padding) maps that to the output, as in the reference path.
std::vector<torch::Tensor> filtered_lrelu_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor fu, torch::Tensor fd,
                                               int64_t up, int64_t down, int64_t pad_x0, int64_t pad_y0, int64_t hi_w,
                                               int64_t hi_h, double up_gain, double slope, double clamp,
                                               bool flip_filter, bool want_bits) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.numel() > 0, "filtered_lrelu: x must be a non-empty 4-D CUDA tensor");
    check_filter(fu, x, "fu");
    check_filter(fd, x, "fd");
    const bool has_bias = b.defined() && b.numel() > 0;
    if (has_bias)
        TORCH_CHECK(b.is_cuda() && b.device() == x.device() && b.scalar_type() == x.scalar_type() && b.dim() == 1 &&
                    b.is_contiguous() && b.numel() == x.size(1), "filtered_lrelu: b must be a contiguous [C] tensor like x");
    TORCH_CHECK(up >= 1 && down >= 1, "filtered_lrelu: up and down must be >= 1");
    TORCH_CHECK(hi_w >= fd.size(1) && hi_h >= fd.size(0), "filtered_lrelu: the filters do not fit the input");
    TORCH_CHECK(x.size(2) * up < INT32_MAX && x.size(3) * up < INT32_MAX, "filtered_lrelu: input too large");
    const int64_t out_w = (hi_w - fd.size(1)) / down + 1, out_h = (hi_h - fd.size(0)) / down + 1;

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    torch::Tensor out = torch::empty({x.size(0), x.size(1), out_h, out_w},
                                     x.options().memory_format(x.suggest_memory_format()));
    torch::Tensor bits = want_bits
        ? torch::zeros({x.size(0), x.size(1), hi_h, filtered_lrelu::words_per_row(static_cast<int>(hi_w))},
                       x.options().dtype(torch::kInt32))
        : torch::empty({0}, x.options().dtype(torch::kInt32));

    filtered_lrelu::Params p;
    p.x = x.data_ptr();
    p.bias = has_bias ? b.data_ptr() : nullptr;
    p.fu = fu.data_ptr<float>();
    p.fd = fd.data_ptr<float>();
    p.out = out.data_ptr();
    p.bits = want_bits ? reinterpret_cast<uint32_t*>(bits.data_ptr<int32_t>()) : nullptr;
    p.plan.up_pass = upfirdn2d::Geometry{static_cast<int>(x.size(3)), static_cast<int>(x.size(2)), static_cast<int>(up),
                                         static_cast<int>(up), 1, 1, static_cast<int>(pad_x0), static_cast<int>(pad_y0),
                                         static_cast<int>(fu.size(1)), static_cast<int>(fu.size(0)), flip_filter,
                                         static_cast<float>(up_gain)};
    p.plan.down_pass = upfirdn2d::Geometry{static_cast<int>(hi_w), static_cast<int>(hi_h), 1, 1, static_cast<int>(down),
                                           static_cast<int>(down), 0, 0, static_cast<int>(fd.size(1)),
                                           static_cast<int>(fd.size(0)), flip_filter, 1.0f};
    p.plan.slope = static_cast<float>(slope);
    p.plan.clamp = static_cast<float>(clamp);
    p.batch = x.size(0);
    p.channels = x.size(1);
    p.out_w = static_cast<int>(out_w);
    p.out_h = static_cast<int>(out_h);
    kernel_binding::strides_of(x, p.x_stride);
    kernel_binding::strides_of(out, p.out_stride);
    kernel_binding::check_launch(filtered_lrelu::launch(p, kernel_binding::dtype_of(x, "filtered_lrelu"),
                                                 c10::cuda::getCurrentCUDAStream()), "filtered_lrelu");
    return {out, bits};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("filtered_lrelu", &filtered_lrelu_cuda, "Fused bias + upsample + leaky ReLU + clamp + downsample (CUDA)");
}
