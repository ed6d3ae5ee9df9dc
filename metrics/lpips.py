"""LPIPS (Zhang et al. 2018, package `lpips` v0.1, net='vgg') as our own module, for perceptual path length.

`LPIPSVGG16` follows the calling convention of NVIDIA's `vgg16.pkl` for PPL:
`detector(images_0_255, resize_images=False, return_lpips=True)` -> an [N, D] float32 vector per image
such that `((a - b) ** 2).sum(1)` is the LPIPS distance between the two images. It is built from ONE
state_dict holding torchvision's VGG16 `features.*` tensors and the five LPIPS v0.1 weights
`lin{0..4}.model.1.weight`; make that file from the two published downloads with

    python -m metrics.lpips --vgg16=vgg16-397923af.pth --lin=vgg.pth --dest=lpips_vgg16.pth

and pass it as the 'vgg16' detector (`calc_metrics.py --detector=vgg16=lpips_vgg16.pth`). Reading it uses
`torch.load(weights_only=True)`: nothing in the file is executed.
"""

import os
import re
import sys

import click
import torch
import torch.nn.functional as F

from metrics import detectors

# The `lpips` package's ScalingLayer: inputs in [-1, 1] are shifted and scaled per RGB channel.
_SHIFT = (-.030, -.088, -.188)
_SCALE = (.458, .448, .450)
_NUM_TAPS = len(detectors._VGG16_STAGES)
_NORM_EPS = 1e-10


def lin_key(index):
    """State_dict name of the per-channel weights of tap `index`, as in LPIPS v0.1's `vgg.pth`."""
    return f'lin{index}.model.1.weight'


def _stage_layout():
    """Per stage, in torchvision's `features`: (its first conv, the end of its last ReLU) = (0, 4), (5, 9), (10, 16), ..."""
    layout, index = [], 0
    for num_convs in detectors._VGG16_STAGES:
        layout.append((index, index + 2 * num_convs))
        index += 2 * num_convs + 1  # Convs, ReLUs and the max pool that opens the next stage.
    return layout


class _LinLayer(torch.nn.Module):
    """1x1 bias-free channel weights; slot 0 of `model` is the dropout of the `lpips` package (an identity here)."""

    def __init__(self, channels):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Conv2d(channels, 1, 1, bias=False))


class LPIPSVGG16(torch.nn.Module):
    """LPIPS v0.1 with the VGG16 trunk: torchvision `features.*` names, and `lin0`..`lin4` weights.

    `forward(images, resize_images=True, return_lpips=False, return_features=False)`: images are uint8 or
    float 0..255, NCHW, 1 or 3 channels (1 is repeated). With `resize_images` they are first resized to
    224x224 like our `detectors.VGG16` (bilinear with antialiasing; skipped at 224); PPL passes False.
    They are mapped to [-1, 1] by x / 127.5 - 1, then by the LPIPS scaling layer. `return_lpips=True`
    returns, per image, the concatenation over the five taps (relu1_2 .. relu5_3) of the channel-unit-
    normalised activations times sqrt(lin weight) / sqrt(H * W), flattened: the squared Euclidean
    distance of two such vectors is the LPIPS distance (weighted squared difference, spatial mean, summed
    over channels and taps). Any other output (`return_features`, class scores) raises ValueError: this
    network has no classifier; precision/recall uses the torchvision VGG16 state_dict.

    `widths` exist so that small stand-ins can be built for tests; `from_state_dict` reads them.
    A fresh instance holds placeholder weights.
    """

    INPUT_SIZE = 224

    def __init__(self, widths=(64, 128, 256, 512, 512)):
        super().__init__()
        layers, in_channels = [], 3
        for width, num_convs in zip(widths, detectors._VGG16_STAGES):
            for _ in range(num_convs):
                layers += [torch.nn.Conv2d(in_channels, width, 3, padding=1), torch.nn.ReLU()]
                in_channels = width
            layers.append(torch.nn.MaxPool2d(2, 2))
        self.features = torch.nn.Sequential(*layers)
        self.widths = tuple(widths)
        for index, width in enumerate(widths):
            setattr(self, f'lin{index}', _LinLayer(width))
        self.register_buffer('shift', torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('scale', torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    @classmethod
    def from_state_dict(cls, state_dict, source='The state_dict'):
        """Build from torchvision VGG16 `features.*` plus `lin{i}.model.1.weight` tensors; `classifier.*` is ignored.

        Raises DetectorError naming the first missing, unexpected, misshapen or negative tensor.
        """
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith('classifier.')}
        try:
            widths = tuple(state_dict[f'features.{conv}.weight'].shape[0] for conv, _end in _stage_layout())
        except (KeyError, AttributeError, IndexError):
            widths = (64, 128, 256, 512, 512)  # The check below names the bad key.
        model = cls(widths)
        detectors._check_state_dict(model, state_dict, source, 'an LPIPS VGG16 (torchvision features + LPIPS lin)')
        for index in range(_NUM_TAPS):
            if (state_dict[lin_key(index)] < 0).any():
                raise detectors.DetectorError(f'{source} is not an LPIPS VGG16 state_dict: \'{lin_key(index)}\' has '
                                              f'negative weights, which LPIPS never has.')
        model.load_state_dict(state_dict, strict=True)
        return model

    def taps(self, x):
        """Normalised input -> the five ReLU activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""
        activations, start = [], 0
        for _conv, end in _stage_layout():
            x = self.features[start:end](x)
            activations.append(x)
            start = end
        return activations

    def lpips_vectors(self, x):
        parts = []
        for index, tap in enumerate(self.taps(x)):
            unit = tap / (tap.square().sum(dim=1, keepdim=True).sqrt() + _NORM_EPS)
            weight = getattr(self, f'lin{index}').model[1].weight.view(1, -1, 1, 1)
            parts.append((unit * weight.sqrt() / (tap.shape[2] * tap.shape[3]) ** 0.5).flatten(1))
        return torch.cat(parts, dim=1)

    def forward(self, images, resize_images=True, return_lpips=False, return_features=False):
        if return_features or not return_lpips:
            raise ValueError('LPIPSVGG16 computes only LPIPS vectors (return_lpips=True); for VGG16 features use the '
                             'torchvision-format VGG16 state_dict.')
        x = detectors._as_float_rgb(images).to(self.shift.device)
        with detectors._full_fp32(x.device):
            if resize_images and x.shape[-2:] != (self.INPUT_SIZE, self.INPUT_SIZE):
                x = F.interpolate(x, size=(self.INPUT_SIZE, self.INPUT_SIZE), mode='bilinear',
                                  align_corners=False, antialias=True)
            x = (x / 127.5 - 1 - self.shift) / self.scale
            return self.lpips_vectors(x)


def is_lpips_state_dict(names):
    """True for tensor names of VGG16 features plus any LPIPS lin weight (the loader then names what is missing)."""
    names = list(names)
    return any(re.fullmatch(r'lin\d+\.model\.\d+\.weight', name) for name in names) and \
        any(name.startswith('features.') for name in names)


# ----------------------------------------------------------------------------------------------
# Merging the two published files into one.


class LPIPSFileError(click.ClickException):
    """A bad input of the merge command; click prints it as one 'Error: ...' line and exits with 1."""


def _load_tensors(path, option):
    if not os.path.isfile(path):
        raise LPIPSFileError(f'{option} file {path} does not exist; pass the downloaded file.')
    try:
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # weights_only refuses anything but tensors and plain containers.
        raise LPIPSFileError(f'{option} file {path} is not a plain state_dict of tensors ({type(err).__name__}).') from None
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in state_dict.items()):
        raise LPIPSFileError(f'{option} file {path} holds a {type(state_dict).__name__}, not a state_dict of named tensors.')
    return state_dict


def merge_state_dicts(vgg16, lin, vgg16_source='--vgg16', lin_source='--lin'):
    """One LPIPSVGG16 state_dict from torchvision's VGG16 state_dict and LPIPS v0.1's `vgg.pth`; checked by loading it."""
    features = {k: v for k, v in vgg16.items() if k.startswith('features.')}
    if not features:
        raise LPIPSFileError(f'{vgg16_source} holds no \'features.*\' tensors; pass torchvision\'s vgg16-397923af.pth.')
    lins = {lin_key(i): lin.get(lin_key(i)) for i in range(_NUM_TAPS)}
    for key, value in lins.items():
        if value is None:
            raise LPIPSFileError(f'{lin_source} lacks the tensor \'{key}\'; pass LPIPS v0.1\'s vgg.pth.')
    merged = {**features, **lins}
    try:
        LPIPSVGG16.from_state_dict(merged, f'The merge of {vgg16_source} and {lin_source}')
    except detectors.DetectorError as err:
        raise LPIPSFileError(str(err)) from None
    return merged


def _save_atomically(state_dict, dest):
    folder, name = os.path.split(os.path.abspath(dest))
    tmp_path = os.path.join(folder, f'.{name}.tmp-{os.getpid()}')
    try:
        torch.save(state_dict, tmp_path)
        os.replace(tmp_path, dest)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


@click.command()
@click.option('--vgg16', 'vgg16_path', required=True, metavar='PATH', help="torchvision's VGG16 weights (vgg16-397923af.pth)")
@click.option('--lin', 'lin_path', required=True, metavar='PATH', help="LPIPS v0.1 linear weights (lpips/weights/v0.1/vgg.pth)")
@click.option('--dest', required=True, metavar='PATH', help='Output state_dict for the PPL detector (must not exist)')
def main(vgg16_path, lin_path, dest):
    """Merge torchvision's VGG16 and the LPIPS v0.1 weights into one state_dict for the PPL metric.

    \b
    python -m metrics.lpips --vgg16=vgg16-397923af.pth --lin=vgg.pth --dest=lpips_vgg16.pth
    python calc_metrics.py --metrics=ppl2_wend --detector=vgg16=lpips_vgg16.pth --network=...
    """
    if os.path.exists(dest):
        raise LPIPSFileError(f'--dest {dest} already exists; pass a new file name.')
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise LPIPSFileError(f'--dest {dest} is in a folder that does not exist; create it first.')
    merged = merge_state_dicts(_load_tensors(vgg16_path, '--vgg16'), _load_tensors(lin_path, '--lin'),
                               f'--vgg16 file {vgg16_path}', f'--lin file {lin_path}')
    _save_atomically(merged, dest)
    click.echo(f'Wrote {dest} ({len(merged)} tensors).')


if __name__ == '__main__':
    main(sys.argv[1:], prog_name='python -m metrics.lpips')
