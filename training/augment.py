"""Adaptive discriminator augmentation (ADA): the differentiable augmentation pipeline.

`AugmentPipe` takes the constructor arguments of the official StyleGAN2-ADA / StyleGAN3 pipeline and
holds the same buffers (`p`, `Hz_geom`, `Hz_fbank`), so official snapshots rebuild into it through
the no-exec loader. Every argument is a probability multiplier: a group runs on each image with
probability `multiplier * p`, where the buffer `p` is the ADA strength the training loop adjusts.
Stages, in order: geometry (pixel blitting, then general affine), colour, image-space filtering,
additive noise, cutout, as in the official StyleGAN3 repository's training/augment.py.

Design choices beyond the official pipeline:
  * Images whose geometric transform moves whole pixels (flips, quarter turns, integer shifts, with
    no general transform drawn) are copied pixel by pixel instead of being resampled, so blitting
    is exact; the official code resamples them through the (asymmetric) sym6 filter pair, which
    blurs them slightly. Images with nothing drawn at all come back untouched, so `p = 0` is an
    exact identity.
  * `debug_percentile=q` replaces every random draw by its exact q-quantile (the official debug
    mode leaves out the sqrt(2) of the normal quantile) and applies every enabled group.
  * sym6 is not symmetric, so its 2x grids sit a fifth of a pixel off where a symmetric filter's
    would; the official code ignores this, which turns rotations and scalings about a point off the
    image centre. Here the sampling grid accounts for the filter's delay.
  * Reflection padding also works when the pad is wider than the image (small images).
All randomness comes from torch's global generator on the images' device, so restoring torch's RNG
state reproduces an augmentation exactly. Gradients of any order flow w.r.t. the images.

Self-contained on purpose: a pickle embeds this file's source, so it imports only torch, numpy and
torch_utils.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

# ----------------------------------------------------------------------------------------------
# Orthonormal wavelet low-pass (decomposition) filters. sym2 coincides with db2, which has a
# closed form; sym6 is the published 12-tap least-asymmetric Daubechies filter. The tests re-derive
# both by spectral factorisation.

_SQRT3 = np.sqrt(3.0)
SYM2 = [(1 - _SQRT3) / (4 * np.sqrt(2)), (3 - _SQRT3) / (4 * np.sqrt(2)),
        (3 + _SQRT3) / (4 * np.sqrt(2)), (1 + _SQRT3) / (4 * np.sqrt(2))]
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Share of each filter-bank band in the power of a typical image (a 1/f spectrum), lowest band first.
_EXPECTED_BAND_POWER = np.array([10, 1, 1, 1], dtype=np.float64) / 13


def _dilate(h, factor):
    """h(z) -> h(z^factor): factor - 1 zeros between consecutive taps."""
    out = np.zeros((len(h) - 1) * factor + 1)
    out[::factor] = h
    return out


def build_filter_bank(lowpass, num_bands=4):
    """Octave bands of zero-phase filters that sum to the identity, lowest band first: [bands, taps].

    With an orthonormal low-pass h, lo(z) = h(z) h(1/z) / 2 is a half-band filter (centre tap 1/2,
    other even-offset taps 0), so hi = delta - lo is its power complement. Level j splits what the
    levels below left over: band (B-1-j) = lo(z) lo(z^2) ... lo(z^(2^(j-1))) hi(z^(2^j)), and the
    lowest band is the product of all the lo factors. The sum telescopes to the unit impulse.
    """
    h = np.asarray(lowpass, dtype=np.float64)
    lo = np.convolve(h, h[::-1]) / 2
    hi = -lo
    hi[len(lo) // 2] += 1
    bands = []
    smooth = np.ones(1)
    for level in range(num_bands - 1):
        bands.append(np.convolve(smooth, _dilate(hi, 2 ** level)))
        smooth = np.convolve(smooth, _dilate(lo, 2 ** level))
    bands.append(smooth)
    taps = len(smooth)
    return np.stack([np.pad(b, (taps - len(b)) // 2) for b in bands[::-1]])


# ----------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Every argument is a [N] tensor (or a scalar); results are [N, k, k].


def _stack_matrix(rows, like):
    """Assemble [N, k, k] from nested lists of [N] tensors and Python numbers."""
    entries = [[torch.as_tensor(e, dtype=like.dtype, device=like.device).expand(like.shape) for e in row]
               for row in rows]
    return torch.stack([torch.stack(row, dim=-1) for row in entries], dim=-2)


def _translate2d(tx, ty):
    return _stack_matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like=tx)


def _scale2d(sx, sy):
    return _stack_matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like=sx)


def _rotate2d(theta):
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _stack_matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], like=theta)


def _quarter_turns2d(turns):
    """Exact integer rotation matrices for `turns` (0..3) quarter turns; cos/sin would leave 6e-17."""
    cos = misc.constant([1, 0, -1, 0], dtype=turns.dtype, device=turns.device)[turns.long()]
    sin = misc.constant([0, 1, 0, -1], dtype=turns.dtype, device=turns.device)[turns.long()]
    return _stack_matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], like=turns)


def _translate3d(t):
    return _stack_matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], like=t)


def _scale3d(s):
    return _stack_matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], like=s)


def _luma_axis(like):
    """Unit vector along grey, (1, 1, 1) / sqrt(3), in homogeneous RGB."""
    return misc.constant(np.array([1, 1, 1, 0]) / _SQRT3, dtype=like.dtype, device=like.device)


def _identity(k, like):
    return misc.constant(np.eye(k), dtype=like.dtype, device=like.device)


def _rotate_about_luma(theta):
    """Rotation by `theta` about the luma axis (right-hand rule), [N, 4, 4].

    Rodrigues' formula I + sin K + (1 - cos) K^2 with K^2 = -(chroma projector); written so that
    theta = 0 gives the identity exactly.
    """
    cross = misc.constant(np.array([[0, -1, 1, 0], [1, 0, -1, 0], [-1, 1, 0, 0], [0, 0, 0, 0]]) / _SQRT3,
                          dtype=theta.dtype, device=theta.device)  # K x = luma_axis x x
    theta = theta.reshape(-1, 1, 1)
    return _identity(4, theta) + torch.sin(theta) * cross + (torch.cos(theta) - 1) * _chroma_projector(theta)


def _chroma_projector(like):
    """Projector onto the RGB directions orthogonal to grey (zero on the homogeneous coordinate)."""
    v = _luma_axis(like)
    return misc.constant(np.diag([1, 1, 1, 0.0]), dtype=like.dtype, device=like.device) - torch.outer(v, v)


# ----------------------------------------------------------------------------------------------
# Random draws.


class _Draws:
    """The random numbers of one forward pass, or their fixed quantiles in debug mode.

    Values are drawn in float32 from torch's global generator on `device` whatever the image dtype, so
    the random stream does not depend on precision.
    """

    def __init__(self, batch_size, device, strength, debug_percentile=None):
        self.batch_size = batch_size
        self.device = device
        self.strength = strength
        self.q = None
        if debug_percentile is not None:
            self.q = torch.as_tensor(debug_percentile, dtype=torch.float32, device=device)

    @property
    def debug(self):
        return self.q is not None

    def _shape(self, cols):
        return [self.batch_size] if cols is None else [self.batch_size, cols]

    def _fill(self, value, cols):
        """A debug-mode quantile, repeated for every image (and column)."""
        return value.expand(self._shape(cols)).clone()

    def uniform(self, low, high, cols=None):
        if self.debug:
            return self._fill(low + self.q * (high - low), cols)
        return low + torch.rand(self._shape(cols), device=self.device) * (high - low)

    def normal(self, std, cols=None):
        if self.debug:
            return self._fill(np.sqrt(2) * torch.erfinv(self.q * 2 - 1) * std, cols)
        return torch.randn(self._shape(cols), device=self.device) * std

    def half_normal(self, std):
        """|N(0, std^2)|."""
        if self.debug:
            return self._fill(np.sqrt(2) * torch.erfinv(self.q) * std, None)
        return torch.randn([self.batch_size], device=self.device).abs() * std

    def log2_normal(self, std):
        """2^N(0, std^2): a scale factor as likely to halve as to double."""
        return torch.exp2(self.normal(std))

    def integer(self, count):
        """Uniform on {0, ..., count - 1}, as float."""
        if self.debug:
            return self._fill(torch.floor(self.q * count).clamp(max=count - 1), None)
        return torch.floor(torch.rand([self.batch_size], device=self.device) * count)

    def gate(self, values, identity, probability):
        """Keep each image's `values` with `probability` (a tensor or number), else use `identity`.

        One decision per image, also for multi-column values. Debug mode keeps every value.
        """
        if self.debug:
            return values
        keep = torch.rand([self.batch_size], device=self.device) < probability
        keep = keep.reshape([-1] + [1] * (values.ndim - 1))
        return torch.where(keep, values, torch.as_tensor(identity, dtype=values.dtype, device=values.device))


# ----------------------------------------------------------------------------------------------
# Geometric execution.


def _reflect_indices(indices, size):
    """Map integer positions outside [0, size) back inside by mirroring at the edge pixels (no repeat)."""
    if size == 1:
        return torch.zeros_like(indices)
    period = 2 * (size - 1)
    folded = torch.remainder(indices, period)
    return torch.where(folded >= size, period - folded, folded)


def reflect_pad(images, pad):
    """Mirror-pad NCHW `images` by pad = [x0, x1, y0, y1] pixels, any width (F.pad needs pad < size)."""
    x0, x1, y0, y1 = (int(p) for p in pad)
    height, width = images.shape[2:]
    cols = _reflect_indices(torch.arange(-x0, width + x1, device=images.device), width)
    rows = _reflect_indices(torch.arange(-y0, height + y1, device=images.device), height)
    return images.index_select(3, cols).index_select(2, rows)


def _pixel_centres(height, width, device, dtype):
    """Homogeneous centred coordinates [3, H*W] of the pixel centres, row-major (x right, y down)."""
    ys, xs = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                            torch.arange(width, device=device, dtype=dtype), indexing='ij')
    xs = xs.flatten() - (width - 1) / 2
    ys = ys.flatten() - (height - 1) / 2
    return torch.stack([xs, ys, torch.ones_like(xs)])


def blit(images, blit_inv):
    """Apply whole-pixel transforms exactly: output pixel q copies input pixel blit_inv @ q.

    `blit_inv` [N, 3, 3] maps centred output coordinates to centred input coordinates and must send
    pixel centres to pixel centres; positions outside the image are mirrored back in.
    """
    batch_size, num_channels, height, width = images.shape
    # float32 holds these small integers and half-integers exactly.
    centres = _pixel_centres(height, width, images.device, torch.float32)
    source = blit_inv.to(torch.float32) @ centres  # [N, 3, H*W]
    cols = _reflect_indices(torch.round(source[:, 0] + (width - 1) / 2).long(), width)
    rows = _reflect_indices(torch.round(source[:, 1] + (height - 1) / 2).long(), height)
    index = (rows * width + cols).unsqueeze(1).expand(batch_size, num_channels, height * width)
    return images.reshape(batch_size, num_channels, height * width).gather(2, index).reshape(images.shape)


def _centring_error(f):
    """How far the low-frequency delay of the 1-D filter `f` falls short of its middle tap, in taps."""
    taps = torch.arange(f.shape[0], dtype=f.dtype, device=f.device)
    return (f.shape[0] - 1) / 2 - (f * taps).sum() / f.sum()  # a tensor: no device sync


def resample(images, G_inv, Hz_geom):
    """Apply arbitrary affine transforms with little aliasing: output pixel q samples input at G_inv @ q.

    The image is mirror-padded so that every sample has real content around it, upsampled 2x with the
    orthonormal low-pass `Hz_geom`, sampled bilinearly on a 2x grid, and brought back with the same
    filter reversed. Up- then down-filtering gives the filter's autocorrelation, a unit impulse at the
    kept phase, so the identity transform reproduces the image up to rounding.
    Coordinates are centred on the image, in pixels, x right and y down.
    """
    batch_size, num_channels, height, width = images.shape
    # The 2x filter pair reaches taps/4 original pixels to each side: the sampled grid extends by
    # that much beyond the output (for the down filter), the padding by that much beyond the farthest
    # sampled point (for the up filter).
    border = Hz_geom.shape[0] // 4
    cx, cy = (width - 1) / 2, (height - 1) / 2
    ex, ey = cx + border, cy + border
    corners = torch.tensor([[-ex, ex, ex, -ex], [-ey, -ey, ey, ey], [1, 1, 1, 1]],
                           dtype=G_inv.dtype, device=G_inv.device)
    reach = G_inv @ corners  # [N, 3, 4]
    margins = torch.stack([-reach[:, 0].min() - cx, reach[:, 0].max() - cx,
                           -reach[:, 1].min() - cy, reach[:, 1].max() - cy]) + border
    mx0, mx1, my0, my1 = (max(int(m), 0) for m in torch.ceil(margins).tolist())
    padded = reflect_pad(images, [mx0, mx1, my0, my1])
    upsampled = upfirdn2d.upsample2d(x=padded, f=Hz_geom.to(images.dtype), up=2)

    # affine_grid/grid_sample work in normalised coordinates, [-1, 1] across the outer pixel edges.
    # Output grid: 2x the output plus `border` pixels a side, centred like the output, so a normalised
    # u sits at centred x = u (W + 2 border) / 2. Input: the padded image (centre shifted by the
    # unequal margins), x = v (W + mx0 + mx1) / 2 + (mx1 - mx0) / 2.
    padded_w, padded_h = width + mx0 + mx1, height + my0 + my1
    ones = torch.ones([batch_size], dtype=G_inv.dtype, device=G_inv.device)
    out_to_centred = _scale2d(ones * (width / 2 + border), ones * (height / 2 + border))
    centred_to_in = _scale2d(ones * (2 / padded_w), ones * (2 / padded_h)) @ \
        _translate2d(ones * -(mx1 - mx0) / 2, ones * -(my1 - my0) / 2)
    # sym6 is not symmetric: at low frequencies it delays by sum(n h) / sum(h) = 5.10 taps, not the
    # 5.5 the padding above assumes, which moves both 2x grids by the same fraction of a pixel.
    # Identity and translations do not notice; rotations and scalings would turn about a point off
    # the image centre (by 0.2 px each way for sym6), so the transform is conjugated by that shift.
    delay_offset = _centring_error(Hz_geom).to(G_inv.dtype) / 2  # taps at 2x -> original pixels
    recentre = _translate2d(ones * delay_offset, ones * delay_offset)
    recentre_inv = _translate2d(ones * -delay_offset, ones * -delay_offset)
    theta = (centred_to_in @ recentre_inv @ G_inv @ recentre @ out_to_centred)[:, :2, :]
    grid_shape = [batch_size, num_channels, 2 * (height + 2 * border), 2 * (width + 2 * border)]
    grid = torch.nn.functional.affine_grid(theta=theta.to(images.dtype), size=grid_shape, align_corners=False)
    sampled = grid_sample_gradfix.grid_sample(upsampled, grid)
    return upfirdn2d.downsample2d(x=sampled, f=Hz_geom.to(images.dtype), down=2, padding=-2 * border,
                                  flip_filter=True)


# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """The ADA augmentation pipeline; see the module docstring. `p` is the overall strength."""

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
        hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1, 1, 1, 1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))  # Overall strength; the training loop writes it.

        # Pixel blitting.
        self.xflip = float(xflip)            # Probability multiplier for x-flip.
        self.rotate90 = float(rotate90)      # Probability multiplier for rotations by multiples of 90 degrees.
        self.xint = float(xint)              # Probability multiplier for integer translation.
        self.xint_max = float(xint_max)      # Largest integer translation, as a fraction of the image size.

        # General geometric transforms.
        self.scale = float(scale)            # Probability multiplier for isotropic scaling.
        self.rotate = float(rotate)          # Probability multiplier for arbitrary rotation.
        self.aniso = float(aniso)            # Probability multiplier for anisotropic scaling.
        self.xfrac = float(xfrac)            # Probability multiplier for fractional translation.
        self.scale_std = float(scale_std)    # Std of log2 of the isotropic scale.
        self.rotate_max = float(rotate_max)  # Largest rotation, in units of pi.
        self.aniso_std = float(aniso_std)    # Std of log2 of the anisotropic scale.
        self.xfrac_std = float(xfrac_std)    # Std of the fractional translation, as a fraction of the size.

        # Colour transforms.
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.lumaflip = float(lumaflip)
        self.hue = float(hue)
        self.saturation = float(saturation)
        self.brightness_std = float(brightness_std)  # Std of the added brightness.
        self.contrast_std = float(contrast_std)      # Std of log2 of the contrast factor.
        self.hue_max = float(hue_max)                # Largest hue rotation, in units of pi.
        self.saturation_std = float(saturation_std)  # Std of log2 of the saturation factor.

        # Image-space filtering.
        self.imgfilter = float(imgfilter)
        self.imgfilter_bands = list(imgfilter_bands)  # Per-band probability multipliers, lowest band first.
        self.imgfilter_std = float(imgfilter_std)     # Std of log2 of each band's gain.

        # Corruptions.
        self.noise = float(noise)
        self.cutout = float(cutout)
        self.noise_std = float(noise_std)      # Std of the per-image noise level (half-normal).
        self.cutout_size = float(cutout_size)  # Side of the cutout square, as a fraction of the image size.

        # Hz_geom is 1-D (12 taps pass setup_filter's separable rule); official pickles hold it so.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6))
        self.register_buffer('Hz_fbank', torch.as_tensor(build_filter_bank(SYM2), dtype=torch.float32))

    def forward(self, images, debug_percentile=None):
        assert isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()
        num_channels = images.shape[1]
        uses_colour = any(m > 0 for m in (self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation))
        if uses_colour and num_channels != 1 and num_channels % 3 != 0:
            raise ValueError(f'AugmentPipe: colour augmentation needs 1 channel or RGB triples (3, 6, ...), '
                             f'got {num_channels} channels.')
        draws = _Draws(images.shape[0], images.device, self.p, debug_percentile)
        images = self._geometry(images, draws)
        if uses_colour:
            images = self._colour(images, draws)
        if self.imgfilter > 0:
            images = self._filter_bands(images, draws)
        if self.noise > 0:
            images = self._noise(images, draws)
        if self.cutout > 0:
            images = self._cutout(images, draws)
        return images

    # ------------------------------------------------------------------------------------------
    # Geometry.

    def _sample_geometry(self, images, draws):
        """Draw each image's transform: (blit_inv, G_inv, needs_resample).

        Both matrices map centred output to centred input coordinates. blit_inv holds the pixel
        blitting part (exact integers); G_inv = blit_inv @ (general part). needs_resample [N] marks
        images whose transform does not move whole pixels.
        """
        batch_size, _, height, width = images.shape
        ones = torch.ones([batch_size], device=images.device)
        zeros = torch.zeros([batch_size], device=images.device)
        strength = self.p
        blit_inv = _scale2d(ones, ones)
        quarter_turns = zeros

        # Inverse transforms compose by right-multiplication, each one applied to the output
        # coordinates before those listed earlier.
        if self.xflip > 0:
            flip = draws.gate(draws.integer(2), 0, self.xflip * strength)
            blit_inv = blit_inv @ _scale2d(1 - 2 * flip, ones)
        if self.rotate90 > 0:
            quarter_turns = draws.gate(draws.integer(4), 0, self.rotate90 * strength)
            blit_inv = blit_inv @ _quarter_turns2d(quarter_turns)  # content turns counter-clockwise on screen
        if self.xint > 0:
            shift = draws.gate(draws.uniform(-self.xint_max, self.xint_max, cols=2), 0, self.xint * strength)
            blit_inv = blit_inv @ _translate2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height))

        general_inv = _scale2d(ones, ones)
        general_drawn = torch.zeros([batch_size], dtype=torch.bool, device=images.device)
        if self.scale > 0:
            s = draws.gate(draws.log2_normal(self.scale_std), 1, self.scale * strength)
            general_inv = general_inv @ _scale2d(1 / s, 1 / s)
            general_drawn |= s != 1
        # Pre- and post-rotation each run with probability 1 - sqrt(1 - P), so that at least one runs
        # with probability P.
        rotation_probability = 1 - torch.sqrt(torch.clamp(1 - self.rotate * strength, 0, 1))
        if self.rotate > 0:
            theta = draws.gate(draws.uniform(-np.pi * self.rotate_max, np.pi * self.rotate_max), 0,
                               rotation_probability)
            general_inv = general_inv @ _rotate2d(theta)  # content turns counter-clockwise on screen
            general_drawn |= theta != 0
        if self.aniso > 0:
            s = draws.gate(draws.log2_normal(self.aniso_std), 1, self.aniso * strength)
            general_inv = general_inv @ _scale2d(1 / s, s)
            general_drawn |= s != 1
        if self.rotate > 0:
            theta = draws.gate(draws.uniform(-np.pi * self.rotate_max, np.pi * self.rotate_max), 0,
                               rotation_probability)
            if draws.debug:
                theta = torch.zeros_like(theta)  # Debug mode shows one rotation, not two.
            general_inv = general_inv @ _rotate2d(theta)
            general_drawn |= theta != 0
        if self.xfrac > 0:
            shift = draws.gate(draws.normal(self.xfrac_std, cols=2), 0, self.xfrac * strength)
            general_inv = general_inv @ _translate2d(-shift[:, 0] * width, -shift[:, 1] * height)
            general_drawn |= (shift != 0).any(dim=1)

        # A quarter turn of a W x H image maps pixel centres to pixel centres only if W - H is even.
        off_grid_turn = (quarter_turns % 2 == 1) & ((width - height) % 2 == 1)
        needs_resample = general_drawn | off_grid_turn
        return blit_inv, blit_inv @ general_inv, needs_resample

    def _geometry(self, images, draws):
        if not any(m > 0 for m in (self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso,
                                   self.xfrac)):
            return images
        blit_inv, G_inv, needs_resample = self._sample_geometry(images, draws)
        identity = _identity(3, blit_inv)
        if not needs_resample.any() and bool((blit_inv == identity).all()):
            return images
        out = images
        if not bool((blit_inv[~needs_resample] == identity).all()):
            out = blit(images, blit_inv)
        if needs_resample.any():
            index = needs_resample.nonzero()[:, 0]
            dtype = images.dtype if images.dtype == torch.float64 else torch.float32
            moved = resample(images[index], G_inv[index].to(dtype), self.Hz_geom).to(images.dtype)
            out = out.index_copy(0, index, moved)
        return out

    # ------------------------------------------------------------------------------------------
    # Colour.

    def _sample_colour(self, images, draws):
        """Draw each image's colour transform: [N, 4, 4] acting on homogeneous RGB."""
        batch_size, num_channels = images.shape[:2]
        strength = self.p
        like = torch.zeros([batch_size], device=images.device)
        C = _identity(4, like).expand(batch_size, 4, 4)

        # Each transform acts on the result of the ones above it.
        if self.brightness > 0:
            b = draws.gate(draws.normal(self.brightness_std), 0, self.brightness * strength)
            C = _translate3d(b) @ C
        if self.contrast > 0:
            c = draws.gate(draws.log2_normal(self.contrast_std), 1, self.contrast * strength)
            C = _scale3d(c) @ C
        v = _luma_axis(like)
        if self.lumaflip > 0:
            flip = draws.gate(draws.integer(2), 0, self.lumaflip * strength)
            # Householder reflection: negates the luma component, keeps the chroma.
            C = (_identity(4, like) - 2 * torch.outer(v, v) * flip.reshape(-1, 1, 1)) @ C
        if self.hue > 0 and num_channels > 1:
            theta = draws.gate(draws.uniform(-np.pi * self.hue_max, np.pi * self.hue_max), 0, self.hue * strength)
            C = _rotate_about_luma(theta) @ C
        if self.saturation > 0 and num_channels > 1:
            s = draws.gate(draws.log2_normal(self.saturation_std), 1, self.saturation * strength)
            C = (_identity(4, like) + (s.reshape(-1, 1, 1) - 1) * _chroma_projector(like)) @ C
        return C

    def _colour(self, images, draws):
        batch_size, num_channels, height, width = images.shape
        C = self._sample_colour(images, draws).to(images.dtype)
        if num_channels % 3 == 0:
            # Several stacked RGB images (EG3D's image and raw image) share each sample's transform.
            triples = images.reshape(batch_size, num_channels // 3, 3, height * width)
            triples = C[:, None, :3, :3] @ triples + C[:, None, :3, 3:]
            return triples.reshape(images.shape)
        pixels = images.reshape(batch_size, num_channels, height * width)
        if num_channels == 1:
            # A grey value g stands for (g, g, g); the result is read back as the mean of R, G, B.
            C = C[:, :3, :].mean(dim=1, keepdim=True)
            pixels = pixels * C[:, :, :3].sum(dim=2, keepdim=True) + C[:, :, 3:]
        return pixels.reshape(images.shape)

    # ------------------------------------------------------------------------------------------
    # Image-space filtering.

    def _sample_band_gains(self, images, draws):
        """Per-image gains [N, bands] of the filter-bank bands, or None when every gain is 1.

        Each amplified band's gain comes with a rescaling of all bands that keeps the expected power
        of a 1/f image unchanged.
        """
        batch_size = images.shape[0]
        num_bands = self.Hz_fbank.shape[0]
        assert len(self.imgfilter_bands) == num_bands == len(_EXPECTED_BAND_POWER)
        expected_power = misc.constant(_EXPECTED_BAND_POWER, dtype=torch.float32, device=images.device)
        gains = torch.ones([batch_size, num_bands], device=images.device)
        any_drawn = False
        for band, band_strength in enumerate(self.imgfilter_bands):
            if band_strength <= 0:
                continue
            t_band = draws.gate(draws.log2_normal(self.imgfilter_std), 1, self.imgfilter * band_strength * self.p)
            is_band = torch.arange(num_bands, device=images.device) == band
            t = torch.where(is_band, t_band.unsqueeze(1), torch.ones_like(gains))
            t = t / (expected_power * t.square()).sum(dim=1, keepdim=True).sqrt()
            gains = gains * t
            any_drawn = any_drawn or bool((t_band != 1).any())
        return gains if any_drawn else None

    def _filter_bands(self, images, draws):
        gains = self._sample_band_gains(images, draws)
        if gains is None:
            return images
        batch_size, num_channels, height, width = images.shape
        kernel = (gains @ self.Hz_fbank).to(images.dtype)  # [N, taps], zero-phase
        kernel = kernel.repeat_interleave(num_channels, dim=0).reshape(batch_size * num_channels, 1, 1, -1)
        half = self.Hz_fbank.shape[1] // 2
        x = reflect_pad(images, [half] * 4).reshape(1, batch_size * num_channels, height + 2 * half, width + 2 * half)
        x = conv2d_gradfix.conv2d(input=x, weight=kernel, groups=batch_size * num_channels)
        x = conv2d_gradfix.conv2d(input=x, weight=kernel.transpose(2, 3), groups=batch_size * num_channels)
        return x.reshape(images.shape)

    # ------------------------------------------------------------------------------------------
    # Corruptions.

    def _noise(self, images, draws):
        sigma = draws.gate(draws.half_normal(self.noise_std), 0, self.noise * self.p)
        return images + torch.randn_like(images) * sigma.to(images.dtype).reshape(-1, 1, 1, 1)

    def _cutout(self, images, draws):
        batch_size, _, height, width = images.shape
        size = draws.gate(torch.full([batch_size], self.cutout_size, device=images.device), 0, self.cutout * self.p)
        centre = draws.uniform(0, 1, cols=2)
        xs = (torch.arange(width, device=images.device) + 0.5) / width
        ys = (torch.arange(height, device=images.device) + 0.5) / height
        outside_x = (xs.reshape(1, 1, 1, -1) - centre[:, 0].reshape(-1, 1, 1, 1)).abs() >= size.reshape(-1, 1, 1, 1) / 2
        outside_y = (ys.reshape(1, 1, -1, 1) - centre[:, 1].reshape(-1, 1, 1, 1)).abs() >= size.reshape(-1, 1, 1, 1) / 2
        keep = (outside_x | outside_y).to(images.dtype)
        return images * keep


# ----------------------------------------------------------------------------------------------
# Presets (the `--augpipe` choices of StyleGAN2-ADA). 'bgc' is what `--aug=ada|fixed` uses for 2-D
# data; 'color' is for camera-labelled data, where geometric augmentation would break the pairing
# between image and pose.

_blit = dict(xflip=1, rotate90=1, xint=1)
_geom = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_color = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
augpipe_specs = dict(
    blit=_blit,
    geom=_geom,
    color=_color,
    filter=dict(imgfilter=1),
    noise=dict(noise=1),
    cutout=dict(cutout=1),
    bg=dict(**_blit, **_geom),
    bgc=dict(**_blit, **_geom, **_color),
    bgcf=dict(**_blit, **_geom, **_color, imgfilter=1),
    bgcfn=dict(**_blit, **_geom, **_color, imgfilter=1, noise=1),
    bgcfnc=dict(**_blit, **_geom, **_color, imgfilter=1, noise=1, cutout=1),
)

# ----------------------------------------------------------------------------------------------

# Official StyleGAN2-ADA and StyleGAN3 pickles embed a module defining AugmentPipe; the no-exec
# loader rebuilds it from ours (torch_utils.persistence.load).
persistence.register_no_exec_module('training.augment', [AugmentPipe])

# ----------------------------------------------------------------------------------------------
