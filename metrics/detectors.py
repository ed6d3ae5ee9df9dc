"""Feature detectors for the metrics: the FID Inception-v3 and VGG16 as our own modules, and a loader.

`load_detector(url_or_path)` returns a callable with the official calling convention: uint8 (or float
0..255) NCHW images in, `detector(images, return_features=True)` -> float32 features. It accepts

- a plain state_dict of tensors, loaded with `torch.load(weights_only=True)` (nothing in the file is
  executed): pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (the default, `FID_INCEPTION_URL`)
  becomes our `FIDInceptionV3`, a torchvision-format VGG16 state_dict becomes our `VGG16`;
- NVIDIA's `inception-2015-12-05.pkl` / `vgg16.pkl` (a pickled module object), loaded with plain
  `pickle.load` exactly like the official code;
- a TorchScript archive such as NVIDIA's older `inception-2015-12-05.pt`, loaded with `torch.jit.load`.

The FID Inception reproduces the 2015-12-05 TensorFlow graph that every published FID comes from
(the graph of `inception-2015-12-05.tgz`, as the official StyleGAN3 repository's
metrics/metric_utils.py and pytorch-fid's inception.py use it): TF1 `resize_bilinear` to 299x299
inside the network, `(x - 128) / 128`, BatchNorm eps 1e-3, average pools that exclude padding in blocks A, C and
the first E, a max pool in the last block, 1008 classes, 2048-d pool3 features.
"""

import contextlib
import os
import pickle
import warnings
import zipfile

import torch
import torch.nn.functional as F

import dnnlib.util

FID_INCEPTION_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth'
NVIDIA_INCEPTION_URL = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/inception-2015-12-05.pkl'
NVIDIA_VGG16_URL = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics/vgg16.pkl'

# What the metrics use unless the user names another file (MetricOptions.detector_urls, --detector KIND=PATH):
# FID/KID/IS the pytorch-fid Inception weights (a plain state_dict), PR/PPL NVIDIA's VGG16 pickle (LPIPS).
DEFAULT_URLS = dict(inception=FID_INCEPTION_URL, vgg16=NVIDIA_VGG16_URL)


class DetectorError(ValueError):
    """A detector could not be obtained or read; the message is one sentence naming the file and the fix."""


# ----------------------------------------------------------------------------------------------
# Shared input handling.


def _as_float_rgb(images):
    """uint8 or float 0..255 NCHW with 1 or 3 channels -> float32 NCHW with 3 channels."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] not in (1, 3):
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f'A detector takes NCHW images with 1 or 3 channels in 0..255; got {shape}.')
    images = images.to(torch.float32)
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images


@contextlib.contextmanager
def _full_fp32(device):
    """TF32 off for the duration (metrics are defined in fp32; PyTorch enables TF32 for cuDNN by default)."""
    if device.type != 'cuda':
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ----------------------------------------------------------------------------------------------
# TF1 bilinear resize.


def _tf1_source_coords(in_size, out_size, device):
    """Per output index: lower source index, upper source index and the weight of the upper one.

    TF1 `resize_bilinear` (align_corners=False, half_pixel_centers=False) samples output pixel j at
    source coordinate j * (in / out), computed in float32 as TF does, clamps the upper neighbour to
    the last pixel and never antialiases.
    """
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    coords = torch.arange(out_size, dtype=torch.float32) * scale
    lower = coords.floor()
    frac = coords - lower
    lower = lower.to(torch.int64).clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower.to(device), upper.to(device), frac.to(device)


def resize_bilinear_tf1(images, height, width):
    """Resize float NCHW images to [height, width] exactly like TensorFlow 1.x `tf.image.resize_bilinear`.

    Output pixel (i, j) interpolates the input at (i * H / height, j * W / width): no half-pixel offset,
    neighbours clamped at the border, no antialiasing. Interpolation is horizontal, then vertical, in
    the same lerp form as TF. Same-size resizes return the input unchanged.
    """
    in_h, in_w = images.shape[-2:]
    if (in_h, in_w) == (height, width):
        return images
    y0, y1, fy = _tf1_source_coords(in_h, height, images.device)
    x0, x1, fx = _tf1_source_coords(in_w, width, images.device)
    top, bottom = images.index_select(-2, y0), images.index_select(-2, y1)
    fx = fx.to(images.dtype)
    top = top.index_select(-1, x0) + (top.index_select(-1, x1) - top.index_select(-1, x0)) * fx
    bottom = bottom.index_select(-1, x0) + (bottom.index_select(-1, x1) - bottom.index_select(-1, x0)) * fx
    return top + (bottom - top) * fy.to(images.dtype).unsqueeze(-1)


# ----------------------------------------------------------------------------------------------
# State-dict checks shared by both modules.


def _check_state_dict(model, state_dict, source, what):
    """Raise DetectorError naming the first key of `state_dict` that `model` cannot load strictly."""
    prefix = f'{source} is not {what} state_dict'
    expected = model.state_dict()
    for key, tensor in expected.items():
        value = state_dict.get(key)
        if value is None:
            raise DetectorError(f'{prefix}: it lacks the tensor \'{key}\'.')
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise DetectorError(f'{prefix}: \'{key}\' is {getattr(value, "dtype", type(value).__name__)}, not a floating-point tensor.')
        if value.shape != tensor.shape:
            raise DetectorError(f'{prefix}: \'{key}\' has shape {list(value.shape)} where {list(tensor.shape)} is expected.')
    for key in state_dict:
        if key not in expected:
            raise DetectorError(f'{prefix}: it has the unexpected entry \'{key}\'.')


# ----------------------------------------------------------------------------------------------
# The FID Inception-v3.


class _FrozenBatchNorm(torch.nn.Module):
    """Inference-only BatchNorm (eps 1e-3, the TF graph's value); behaves the same in train() mode.

    Stores exactly weight, bias, running_mean and running_var, as the published state_dict does.
    """

    def __init__(self, num_features, eps=1e-3):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(num_features))
        self.bias = torch.nn.Parameter(torch.zeros(num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps)


class _ConvBNReLU(torch.nn.Module):
    """Bias-free convolution, BatchNorm, ReLU: every conv of the Inception graph (names `.conv`, `.bn`)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = torch.nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = _FrozenBatchNorm(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x):
    # The TF graph averages over the valid pixels only: padded zeros do not count at the border.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool_3x3(x):
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class _InceptionA(torch.nn.Module):
    """Mixed_5b/5c/5d (35x35): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, in_channels, pool_channels):
        super().__init__()
        self.branch1x1 = _ConvBNReLU(in_channels, 64, 1)
        self.branch5x5_1 = _ConvBNReLU(in_channels, 48, 1)
        self.branch5x5_2 = _ConvBNReLU(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBNReLU(96, 96, 3, padding=1)
        self.branch_pool = _ConvBNReLU(in_channels, pool_channels, 1)

    def forward(self, x):
        return torch.cat([
            self.branch1x1(x),
            self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_3x3(x)),
        ], dim=1)


class _InceptionB(torch.nn.Module):
    """Mixed_6a (35x35 -> 17x17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = _ConvBNReLU(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBNReLU(in_channels, 64, 1)
        self.branch3x3dbl_2 = _ConvBNReLU(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBNReLU(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3(x),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class _InceptionC(torch.nn.Module):
    """Mixed_6b..6e (17x17): 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""

    def __init__(self, in_channels, mid_channels):
        super().__init__()
        c = mid_channels
        self.branch1x1 = _ConvBNReLU(in_channels, 192, 1)
        self.branch7x7_1 = _ConvBNReLU(in_channels, c, 1)
        self.branch7x7_2 = _ConvBNReLU(c, c, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBNReLU(c, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBNReLU(in_channels, c, 1)
        self.branch7x7dbl_2 = _ConvBNReLU(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBNReLU(c, c, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBNReLU(c, c, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBNReLU(c, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBNReLU(in_channels, 192, 1)

    def forward(self, x):
        dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        return torch.cat([
            self.branch1x1(x),
            self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
            self.branch7x7dbl_5(self.branch7x7dbl_4(dbl)),
            self.branch_pool(_avg_pool_3x3(x)),
        ], dim=1)


class _InceptionD(torch.nn.Module):
    """Mixed_7a (17x17 -> 8x8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = _ConvBNReLU(in_channels, 192, 1)
        self.branch3x3_2 = _ConvBNReLU(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBNReLU(in_channels, 192, 1)
        self.branch7x7x3_2 = _ConvBNReLU(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBNReLU(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBNReLU(192, 192, 3, stride=2)

    def forward(self, x):
        return torch.cat([
            self.branch3x3_2(self.branch3x3_1(x)),
            self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x)))),
            F.max_pool2d(x, kernel_size=3, stride=2),
        ], dim=1)


class _InceptionE(torch.nn.Module):
    """Mixed_7b/7c (8x8): 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1.

    `pool` is 'avg' (padding excluded) in Mixed_7b and 'max' in Mixed_7c, as in the TF graph.
    """

    def __init__(self, in_channels, pool):
        super().__init__()
        assert pool in ('avg', 'max')
        self.pool = pool
        self.branch1x1 = _ConvBNReLU(in_channels, 320, 1)
        self.branch3x3_1 = _ConvBNReLU(in_channels, 384, 1)
        self.branch3x3_2a = _ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBNReLU(in_channels, 448, 1)
        self.branch3x3dbl_2 = _ConvBNReLU(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBNReLU(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBNReLU(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBNReLU(in_channels, 192, 1)

    def forward(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _avg_pool_3x3(x) if self.pool == 'avg' else _max_pool_3x3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl),
            self.branch_pool(pooled),
        ], dim=1)


class FIDInceptionV3(torch.nn.Module):
    """The Inception-v3 of TF's `inception-2015-12-05` graph, as used for FID, KID and IS.

    Parameter names and shapes are those of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
    (torchvision-style: `Conv2d_1a_3x3.conv.weight`, `Mixed_5b.branch1x1.bn.running_mean`, ...,
    `fc.weight` [1008, 2048]); load it with `from_state_dict` or `load_detector`. A fresh instance
    holds placeholder values, not the trained weights. BatchNorm always uses the running statistics.

    `forward(images, return_features=False, no_output_bias=False)`: images are uint8 or float 0..255,
    NCHW, 1 or 3 channels (1 is repeated), any size; they are resized to 299x299 with TF1 bilinear
    semantics and scaled by (x - 128) / 128 inside the network. Returns the [N, 2048] pool3 features
    (float32) when `return_features`, else the softmax over the 1008 classes; with `no_output_bias`
    the softmax of pool3 @ fc.weight^T without the bias (what the Inception Score uses).
    """

    INPUT_SIZE = 299
    NUM_FEATURES = 2048
    NUM_CLASSES = 1008

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = _ConvBNReLU(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _ConvBNReLU(32, 32, 3)
        self.Conv2d_2b_3x3 = _ConvBNReLU(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _ConvBNReLU(64, 80, 1)
        self.Conv2d_4a_3x3 = _ConvBNReLU(80, 192, 3)
        self.Mixed_5b = _InceptionA(192, pool_channels=32)
        self.Mixed_5c = _InceptionA(256, pool_channels=64)
        self.Mixed_5d = _InceptionA(288, pool_channels=64)
        self.Mixed_6a = _InceptionB(288)
        self.Mixed_6b = _InceptionC(768, mid_channels=128)
        self.Mixed_6c = _InceptionC(768, mid_channels=160)
        self.Mixed_6d = _InceptionC(768, mid_channels=160)
        self.Mixed_6e = _InceptionC(768, mid_channels=192)
        self.Mixed_7a = _InceptionD(768)
        self.Mixed_7b = _InceptionE(1280, pool='avg')
        self.Mixed_7c = _InceptionE(2048, pool='max')
        self.fc = torch.nn.Linear(self.NUM_FEATURES, self.NUM_CLASSES)
        self.eval().requires_grad_(False)

    @classmethod
    def from_state_dict(cls, state_dict, source='The state_dict'):
        """Build the network from pytorch-fid's state_dict (with or without `num_batches_tracked`).

        Raises DetectorError naming the first missing, unexpected or misshapen tensor.
        """
        model = cls()
        state_dict = {k: v for k, v in state_dict.items() if not k.endswith('.num_batches_tracked')}
        _check_state_dict(model, state_dict, source, 'an FID Inception-v3 (pytorch-fid format)')
        model.load_state_dict(state_dict, strict=True)
        return model

    def pool3(self, x):
        """Normalised 299x299 input -> [N, 2048] global average of the last 8x8 feature map."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images, return_features=False, no_output_bias=False):
        x = _as_float_rgb(images).to(self.fc.weight.device)
        with _full_fp32(x.device):
            x = resize_bilinear_tf1(x, self.INPUT_SIZE, self.INPUT_SIZE)
            x = (x - 128) / 128
            features = self.pool3(x)
            if return_features:
                return features
            logits = F.linear(features, self.fc.weight, None if no_output_bias else self.fc.bias)
            return F.softmax(logits, dim=1)


# ----------------------------------------------------------------------------------------------
# VGG16.

_VGG16_STAGES = (2, 2, 3, 3, 3)  # 3x3 convs per stage; each stage ends with a 2x2 max pool.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16(torch.nn.Module):
    """VGG16 in torchvision's layout (`features.{0,2,5,...}`, `classifier.{0,3,6}`), for precision/recall.

    `forward(images, return_features=False, resize_images=True)`: images are uint8 or float 0..255,
    NCHW, 1 or 3 channels. They are resized to 224x224 (PyTorch bilinear, half-pixel centres, with
    antialiasing; skipped at 224 or with `resize_images=False`), scaled to 0..1 and normalised with
    the ImageNet mean and std that torchvision's weights expect. Returns the fc2 features after their
    ReLU ([N, 4096], float32) when `return_features`, else the softmax over the classes.

    These features are not numerically those of NVIDIA's `vgg16.pkl` (different weights and
    preprocessing), so precision/recall values are comparable only among runs that use this module.
    The LPIPS distance needs `metrics.lpips.LPIPSVGG16` or NVIDIA's pickle. `widths`, `fc_channels` and
    `num_classes` exist so that small stand-ins can be built for tests; `from_state_dict` reads them
    from the tensors.
    """

    INPUT_SIZE = 224

    def __init__(self, widths=(64, 128, 256, 512, 512), fc_channels=4096, num_classes=1000):
        super().__init__()
        layers, in_channels = [], 3
        for width, num_convs in zip(widths, _VGG16_STAGES):
            for _ in range(num_convs):
                layers += [torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU()]
                in_channels = width
            layers.append(torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(*layers)
        # torchvision's dropout slots (2, 5) are identities: these weights are only ever evaluated.
        self.classifier = torch.nn.Sequential(
            torch.nn.Linear(in_channels * 7 * 7, fc_channels), torch.nn.ReLU(), torch.nn.Identity(),
            torch.nn.Linear(fc_channels, fc_channels), torch.nn.ReLU(), torch.nn.Identity(),
            torch.nn.Linear(fc_channels, num_classes))
        self.register_buffer('mean', torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_state_dict(cls, state_dict, source='The state_dict'):
        """Build the network from a torchvision-format VGG16 state_dict; DetectorError names the first bad key."""
        conv_indices, index = [], 0
        for num_convs in _VGG16_STAGES:
            conv_indices.append(index)
            index += 2 * num_convs + 1
        try:
            widths = tuple(state_dict[f'features.{i}.weight'].shape[0] for i in conv_indices)
            fc_channels = state_dict['classifier.0.weight'].shape[0]
            num_classes = state_dict['classifier.6.weight'].shape[0]
        except (KeyError, AttributeError, IndexError):
            widths, fc_channels, num_classes = (64, 128, 256, 512, 512), 4096, 1000  # the check names the key
        model = cls(widths, fc_channels, num_classes)
        _check_state_dict(model, state_dict, source, 'a torchvision-format VGG16')
        model.load_state_dict(state_dict, strict=True)
        return model

    def forward(self, images, return_features=False, resize_images=True, return_lpips=False):
        if return_lpips:
            raise ValueError(f'This VGG16 has no LPIPS weights; use a file made by python -m metrics.lpips, or NVIDIA\'s '
                             f'vgg16.pkl ({NVIDIA_VGG16_URL}).')
        x = _as_float_rgb(images).to(self.mean.device)
        with _full_fp32(x.device):
            if resize_images and x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
                x = F.interpolate(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), mode='bilinear',
                                  align_corners=False, antialias=True)
            x = (x / 255 - self.mean) / self.std
            x = F.adaptive_avg_pool2d(self.features(x), (7, 7)).flatten(1)
            fc2 = self.classifier[:5](x)
            if return_features:
                return fc2
            return F.softmax(self.classifier[6](fc2), dim=1)


# ----------------------------------------------------------------------------------------------
# Loading.

_detector_cache = {}

# torch.save's legacy (non-zip) format starts with a pickled magic number.
_LEGACY_TORCH_MAGIC = b'\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')


def load_detector(url_or_path, device=None, verbose=False, cache_dir=None):
    """Load a feature detector once per (url_or_path, device); returns a callable taking uint8 NCHW images.

    `url_or_path` is an http(s):// or file:// URL or a local path; URLs go through `dnnlib.util.open_url`
    and its download cache (`cache_dir`, default `<dnnlib cache>/downloads`). The file kind is decided
    by its content:

    - a state_dict of tensors (`torch.save`, zip or legacy format) is read with
      `torch.load(weights_only=True)`, which executes nothing, and becomes our `FIDInceptionV3`
      (pytorch-fid names) or our `VGG16` (torchvision names);
    - a TorchScript archive is loaded with `torch.jit.load`;
    - any other pickle, such as NVIDIA's `inception-2015-12-05.pkl` or `vgg16.pkl`, is loaded with
      plain `pickle.load`, exactly like the official code. Unpickling can run arbitrary code: this is
      trusted only because the file comes from the configured URL or from a file the user names.

    The detector is moved to `device` (default CPU) and put in eval mode. Raises DetectorError with one
    sentence when the file is missing, cannot be downloaded (naming the URL and the cache path where
    the file can be placed by hand) or is not a detector.
    """
    device = torch.device('cpu' if device is None else device)
    is_url = '://' in str(url_or_path)
    key = (str(url_or_path) if is_url else os.path.abspath(url_or_path), str(device))
    if key not in _detector_cache:
        path = _fetch(str(url_or_path), is_url, verbose, cache_dir)
        _detector_cache[key] = _read_detector(path, str(url_or_path), device)
    return _detector_cache[key]


def _fetch(url_or_path, is_url, verbose, cache_dir):
    """Local file name of the detector, downloading it into the cache when needed."""
    if not is_url:
        if not os.path.isfile(url_or_path):
            raise DetectorError(f'Detector file {url_or_path} does not exist; pass an existing file or a URL.')
        return url_or_path
    try:
        return dnnlib.util.open_url(url_or_path, cache_dir=cache_dir, verbose=verbose, return_filename=True)
    except dnnlib.util.DownloadError as err:
        raise DetectorError(str(err)) from None  # Its message names the URL and the cache path to fill by hand.
    except AssertionError:
        raise DetectorError(f'Detector location {url_or_path} is neither a valid URL nor a file path.') from None
    except OSError as err:
        raise DetectorError(f'Could not open detector {url_or_path} ({type(err).__name__}: {err}).') from None


def _file_kind(path):
    """'torchscript', 'state_dict' or 'pickle', from the file's content."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(name.endswith('/constants.pkl') or '/code/' in name for name in names):
            return 'torchscript'
        return 'state_dict'
    with open(path, 'rb') as f:
        head = f.read(32)
    if head[:1] == b'\x80' and _LEGACY_TORCH_MAGIC in head:  # After the protocol (and, from protocol 4, a frame) header.
        return 'state_dict'
    if head[:1] == b'\x80':
        return 'pickle'
    return 'unknown'


def _first_line(err):
    text = str(err).strip()
    return f'{type(err).__name__}: {text.splitlines()[0] if text else ""}'.rstrip(': ')


def _read_detector(path, source, device):
    kind = _file_kind(path)
    if kind == 'unknown':
        raise DetectorError(f'Detector {source} is neither a state_dict, a TorchScript archive nor a pickle.')
    if kind == 'state_dict':
        try:
            state_dict = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # weights_only refuses anything but tensors and plain containers.
            raise DetectorError(f'Detector {source} is not a plain state_dict of tensors: torch.load(weights_only=True) '
                                f'refused it ({type(err).__name__}).') from None
        detector = _module_from_state_dict(state_dict, source)
    elif kind == 'torchscript':
        try:
            with warnings.catch_warnings():  # Recent PyTorch deprecates TorchScript; these files still need it.
                warnings.simplefilter('ignore', DeprecationWarning)
                detector = torch.jit.load(path, map_location='cpu')
        except Exception as err:
            raise DetectorError(f'Could not load TorchScript detector {source} ({_first_line(err)}).') from None
    else:
        try:
            with open(path, 'rb') as f:
                detector = pickle.load(f)  # Trusted: the configured URL or a file the user named.
        except Exception as err:
            raise DetectorError(f'Could not unpickle detector {source} ({_first_line(err)}).') from None
    if not callable(detector):
        raise DetectorError(f'Detector {source} holds a {type(detector).__name__}, which cannot be called on images.')
    if isinstance(detector, torch.nn.Module):
        detector = detector.eval().to(device)
    return detector


def _module_from_state_dict(state_dict, source):
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) for k in state_dict):
        raise DetectorError(f'Detector {source} holds a {type(state_dict).__name__}, not a state_dict of named tensors.')
    names = list(state_dict)
    if any(name.startswith(('Mixed_', 'Conv2d_1a_3x3.')) for name in names):
        return FIDInceptionV3.from_state_dict(state_dict, f'Detector {source}')
    from metrics import lpips  # Imported here: lpips builds on this module.
    if lpips.is_lpips_state_dict(names):  # Before VGG16: an LPIPS file may keep torchvision's classifier tensors.
        return lpips.LPIPSVGG16.from_state_dict(state_dict, f'Detector {source}')
    if any(name.startswith('features.') for name in names) and any(name.startswith('classifier.') for name in names):
        return VGG16.from_state_dict(state_dict, f'Detector {source}')
    if not names:
        raise DetectorError(f'Detector {source} is an empty state_dict.')
    raise DetectorError(f'Detector {source} holds tensors named like \'{names[0]}\', which is neither the FID '
                        f'Inception-v3 (pytorch-fid names) nor a VGG16 (torchvision names, optionally with LPIPS weights).')


def fetch_detector_file(url_or_path, verbose=False, cache_dir=None):
    """Local file name of a detector, downloading it into the cache first when needed; raises DetectorError."""
    return _fetch(str(url_or_path), '://' in str(url_or_path), verbose, cache_dir)
