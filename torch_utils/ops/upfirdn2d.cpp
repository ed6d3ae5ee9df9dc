// PyTorch binding of the general upfirdn2d kernel: argument checks, output allocation in the input's
// memory layout, the current stream.

#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "upfirdn2d.h"
#include "kernel_binding.h"

namespace {


// x [N, C, H, W]; f float32 [fh, fw] (a 1-D filter arrives as its outer product).
torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor f, int64_t up_x, int64_t up_y, int64_t down_x,
                             int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1,
                             bool flip_filter, double gain) {
    TORCH_CHECK(x.is_cuda() && x.dim() == 4, "upfirdn2d: x must be a 4-D CUDA tensor");
    TORCH_CHECK(f.is_cuda() && f.device() == x.device() && f.scalar_type() == torch::kFloat32 && f.dim() == 2,
                "upfirdn2d: f must be a 2-D float32 tensor on the device of x");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: up and down must be >= 1");
    TORCH_CHECK(x.size(2) <= INT32_MAX / up_y && x.size(3) <= INT32_MAX / up_x, "upfirdn2d: input too large");
    const int64_t out_w = (x.size(3) * up_x + pad_x0 + pad_x1 - f.size(1) + down_x) / down_x;
    const int64_t out_h = (x.size(2) * up_y + pad_y0 + pad_y1 - f.size(0) + down_y) / down_y;
    TORCH_CHECK(out_w >= 1 && out_h >= 1, "upfirdn2d: the filter does not fit the padded, upsampled input");

    const c10::cuda::OptionalCUDAGuard guard(x.device());
    const torch::Tensor filter = f.contiguous();
    const auto layout = x.suggest_memory_format();
    torch::Tensor out = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options().memory_format(layout));

    upfirdn2d::Params p;
    p.x = x.data_ptr();
    p.filter = filter.data_ptr<float>();
    p.out = out.data_ptr();
    p.geometry = upfirdn2d::Geometry{static_cast<int>(x.size(3)), static_cast<int>(x.size(2)),
                                     static_cast<int>(up_x), static_cast<int>(up_y), static_cast<int>(down_x),
                                     static_cast<int>(down_y), static_cast<int>(pad_x0), static_cast<int>(pad_y0),
                                     static_cast<int>(filter.size(1)), static_cast<int>(filter.size(0)), flip_filter,
                                     static_cast<float>(gain)};
    p.batch = x.size(0);
    p.channels = x.size(1);
    p.out_w = static_cast<int>(out_w);
    p.out_h = static_cast<int>(out_h);
    kernel_binding::strides_of(x, p.x_stride);
    kernel_binding::strides_of(out, p.out_stride);
    kernel_binding::check_launch(upfirdn2d::launch(p, kernel_binding::dtype_of(x, "upfirdn2d"),
                                                 c10::cuda::getCurrentCUDAStream()), "upfirdn2d");
    return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d_cuda, "Upsample, FIR-filter and downsample (general CUDA kernel)");
}
