"""GRAM: generative radiance manifolds (Deng et al., CVPR 2022; microsoft/GRAM), under our contract.

Written from the description of the official code (generators/generators.py,
generators/representations/gram.py, generators/renderers/manifold_renderer.py,
discriminators/discriminators.py); the parameter names are the official `state_dict` keys, so an
official `generator.pth` loads with `load_state_dict(strict=True)`.

GramGenerator:
- `representation.sample_network` (GramSample): the manifold predictor, a scalar field
  s(x) = MLP(x * 2 / 0.24 - center), 3 -> h -> ... -> 1 with ReLU, independent of z, with GRAM's
  geometric initialisation (hidden weights N(0, sqrt(2 / fan_out)), zero biases, output weights
  10 sqrt(pi / fan_in), output bias -init_radius): at initialisation its level sets are shells about
  `center`.
- Ray-manifold intersection: `num_samples` points at equal depths in [ray_start, ray_end] along
  each ray (no jitter); for each level l of linspace(levels_start, levels_end, K) the first interval
  where s falls through l (s_near >= l >= s_far), or the last interval when none does; the point is
  the linear interpolation ((s_far - l) x_near + (l - s_near) x_far) / (s_far - s_near), or x_far
  when |s_far - s_near| <= 0.05 or the interval does not cross (then the sample is invalid).
  Gradients reach the field only through s in that interpolation.
- `representation.rf_network` (GramRF): pi-GAN's FiLM-SIREN on x * 2 / normalize: 8 layers
  sin(freq (W x + b) + phase), freq = 15 f + 30, with (f, phase) from `mapping_network`
  (z -> 256 -> 256 -> 256 -> 9 * 2 * hidden, LeakyReLU 0.2); after layers 1..7 a sigma head and a
  colour head each, summed; the 7th colour head reads a view-dependent FiLM layer on
  [ray direction, features]; colour sigmoid(.) (1 + 2e-3) - 1e-3, sigma softplus.
- Background (renderer_kwargs['background']): one more sample per ray where it meets the world
  plane z = -0.12, always valid and opaque.
- Compositing (`renderer`, GRAM's ManifoldRenderer): samples sorted by distance from the camera,
  alpha = (1 - exp(-delta sigma)) * valid with the constant delta = delta_alpha (the last sample and
  the background: delta_final), T = prod(1 - alpha + 1e-10) of the samples before, colour
  sum(alpha T rgb) (plus 1 - sum(alpha T) with white_back), mapped to [-1, 1].

Our contract (DESIGN.md): `G(z, c)` with c the [N, 25] camera label returns the NCHW image;
`G(z, c, resolution=R)` renders at R x R (the official `img_size` argument); `return_depth=True`
returns {'image', 'image_depth'}. `G.mapping(z, c)` gives ws [N, 1, w_dim], the mapping network's
raw frequencies and phase shifts; `G.synthesis(ws, c)` renders them. Attributes z_dim, c_dim = 25,
w_dim, num_ws = 1, img_resolution = img_size, img_channels = 3. Truncation moves ws towards w_avg,
the mean of 10000 mapped z drawn with a fixed seed (the official get_avg_w draws them at random).

Units: GRAM's cameras sit at radius 1 about its world origin. `label_scale` (ours, default 1)
multiplies the camera positions of the labels first, for data in other units (EG3D-style labels at
radius 2.7 take 1 / 2.7; the images are the same, the world is scaled); depth is returned in the
labels' units.

Rays: physical pixel-centre rays from the label (training.rendering.rays) by default;
`legacy_rays=True` uses GRAM's own grid, linspace(-1, 1) over the image *including* its borders,
which the official checkpoints were trained with. Either way, for a label made by
`training.cameras.gram_pose_to_label` the rays are GRAM's rays of the same camera.

Speed: the radiance network runs only at valid intersections (invalid samples have alpha = 0 and
add nothing to the image, the depth or any gradient; with last_back every sample is evaluated), and
rays are processed in chunks of `ray_chunk` rays over the whole batch (None: `default_ray_chunk`,
small on the CPU).

GramDiscriminator: GRAM's CoordConv residual network; `D(img, c)` returns the logits [N, 1], and
`D(img, c, return_pose=True)` also the 2 pose values (phi, theta) GRAM regresses.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import persistence
from training.rendering import rays

BACKGROUND_PLANE_Z = -0.12  # GRAM's background plane, world z
MANIFOLD_BOX = 0.24         # GramSample's fixed input box (UniformBoxWarp(0.24))
MIN_INTERVAL_DROP = 0.05    # smaller changes of s across an interval give the far point
TRUNCATION_SAMPLES = 10000

# The official configs' networks and cameras (microsoft/GRAM configs.py: FFHQ_default, CATS_default,
# CARLA_default): GramGenerator's official arguments, our camera arguments, and the D's image size.
_FACE_RENDERER = dict(num_samples=64, num_manifolds=24, levels_start=23, levels_end=8, last_back=False,
                      white_back=False, background=True)


def _face_preset(hidden_dim_sample):
    return dict(
        generator=dict(z_dim=256, img_size=256, h_stddev=0.3, v_stddev=0.155, h_mean=math.pi * 0.5,
                       v_mean=math.pi * 0.5, sample_dist='gaussian',
                       representation_kwargs=dict(hidden_dim=256, sigma_clamp_mode='softplus',
                                                  rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=hidden_dim_sample,
                                                  layer_num_sample=3, center=(0, 0, -1.5), init_radius=0),
                       renderer_kwargs=dict(_FACE_RENDERER)),
        camera=dict(fov=12, ray_start=0.88, ray_end=1.12),
        discriminator=dict(img_size=256))


OFFICIAL_CONFIGS = {
    'FFHQ_default': _face_preset(hidden_dim_sample=128),
    'CATS_default': _face_preset(hidden_dim_sample=64),
    'CARLA_default': dict(
        generator=dict(z_dim=256, img_size=128, h_stddev=math.pi, v_stddev=math.pi * (42.5 / 180),
                       h_mean=math.pi * 0.5, v_mean=math.pi * (42.5 / 180), sample_dist='spherical_uniform',
                       representation_kwargs=dict(hidden_dim=256, normalize=2, sigma_clamp_mode='softplus',
                                                  rgb_clamp_mode='widen_sigmoid', hidden_dim_sample=256,
                                                  layer_num_sample=3, center=(0, 0, 0), init_radius=0),
                       renderer_kwargs=dict(num_samples=64, num_manifolds=48, levels_start=35, levels_end=5,
                                            delta_alpha=0.02, last_back=False, white_back=True, background=False)),
        camera=dict(fov=30, ray_start=0.7, ray_end=1.3),
        discriminator=dict(img_size=128)),
}

# ----------------------------------------------------------------------------------------------
# Initialisations (GRAM's, which are pi-GAN's and SAL's).


def _siren_uniform(linear, freq=25.0):
    bound = np.sqrt(6 / linear.weight.shape[-1]) / freq
    torch.nn.init.uniform_(linear.weight, -bound, bound)


def _first_film_uniform(linear):
    bound = 1 / linear.weight.shape[-1]
    torch.nn.init.uniform_(linear.weight, -bound, bound)


def _geometric_hidden(linear):
    torch.nn.init.normal_(linear.weight, 0, np.sqrt(2 / linear.weight.shape[0]))
    torch.nn.init.zeros_(linear.bias)


def _geometric_output(linear, radius):
    torch.nn.init.constant_(linear.weight, 10 * np.sqrt(np.pi / linear.weight.shape[-1]))
    torch.nn.init.constant_(linear.bias, -radius)

# ----------------------------------------------------------------------------------------------
# The representation.


@persistence.persistent_class
class UniformBoxWarp(torch.nn.Module):
    """x * 2 / sidelength: maps the cube of that side to [-1, 1]^3."""

    def __init__(self, sidelength):
        super().__init__()
        self.scale_factor = 2 / sidelength

    def forward(self, coordinates):
        return coordinates * self.scale_factor


@persistence.persistent_class
class FiLMLayer(torch.nn.Module):
    """sin(freq * (W x + b) + phase), with per-sample freq and phase [N, out] broadcast over the points."""

    def __init__(self, input_dim, hidden_dim):
        super().__init__()
        self.layer = torch.nn.Linear(input_dim, hidden_dim)

    def forward(self, x, freq, phase_shift):
        if not torch.is_grad_enabled() and freq.shape[0] == 1:
            # One sample without autograd: freq (W x + b) + phase = (freq W) x + (freq b + phase), one
            # matrix product and an in-place sine instead of four passes over the activations.
            weight = self.layer.weight * freq.reshape(-1, 1)
            bias = torch.addcmul(phase_shift.reshape(-1), freq.reshape(-1), self.layer.bias)
            return F.linear(x, weight, bias).sin_()
        return torch.sin(torch.addcmul(phase_shift.unsqueeze(1), freq.unsqueeze(1), self.layer(x)))


@persistence.persistent_class
class CustomMappingNetwork(torch.nn.Module):
    """z -> (frequencies, phase shifts): an MLP with LeakyReLU 0.2, Kaiming init, the last layer scaled by 1/4."""

    def __init__(self, z_dim, map_hidden_dim, map_output_dim):
        super().__init__()
        dims = [z_dim, map_hidden_dim, map_hidden_dim, map_hidden_dim, map_output_dim]
        linears = [torch.nn.Linear(fan_in, fan_out) for fan_in, fan_out in zip(dims[:-1], dims[1:])]
        layers = sum([[linear, torch.nn.LeakyReLU(0.2, inplace=True)] for linear in linears[:-1]], []) + linears[-1:]
        self.network = torch.nn.Sequential(*layers)
        for linear in linears:  # after construction, so that a seed draws GRAM's initial values
            torch.nn.init.kaiming_normal_(linear.weight, a=0.2, mode='fan_in', nonlinearity='leaky_relu')
        with torch.no_grad():
            linears[-1].weight *= 0.25

    def forward(self, z):
        out = self.network(z)
        return out.chunk(2, dim=-1)


@persistence.persistent_class
class GramSample(torch.nn.Module):
    """The manifold predictor: a z-independent scalar field whose level sets are the radiance manifolds."""

    def __init__(self, hidden_dim_sample=64, layer_num_sample=3, center=(0, 0, 0), init_radius=0):
        super().__init__()
        self.hidden_dim = hidden_dim_sample
        self.layer_num = layer_num_sample
        linears = [torch.nn.Linear(3 if i == 0 else hidden_dim_sample, hidden_dim_sample) for i in range(layer_num_sample)]
        self.network = torch.nn.Sequential(*sum([[linear, torch.nn.ReLU(inplace=True)] for linear in linears], []))
        self.output_layer = torch.nn.Linear(hidden_dim_sample, 1)
        with torch.no_grad():
            for linear in linears:
                _geometric_hidden(linear)
            _geometric_output(self.output_layer, init_radius)
        self.center = torch.tensor(center, dtype=torch.float32)  # a plain attribute, as official: not in the state_dict
        self.gridwarper = UniformBoxWarp(MANIFOLD_BOX)

    def forward(self, points):
        """s(points) [..., 1] for world points [..., 3]."""
        x = self.gridwarper(points) - self.center.to(points.device, points.dtype)
        return self.output_layer(self.network(x))

    def get_intersections(self, points, levels):
        """(intersections [N, R, L, 3], s [N, R, S, 1], is_valid [N, R, L, 1]) along rays of samples [N, R, S, 3]."""
        s = self(points)
        intersections, valid = first_crossings(points, s.squeeze(-1), levels)
        return intersections, s, valid.unsqueeze(-1).to(intersections.dtype)


def first_crossings(points, s, levels):
    """GRAM's ray-manifold intersections: (points [N, R, L, 3], valid [N, R, L] bool).

    points [N, R, S, 3] are samples along each ray (near to far) and s [N, R, S] the field there;
    levels [L]. For each level the first interval where s falls through it (GRAM's argmax with a
    decreasing cost over the first S - 2 intervals), else the last interval.
    """
    s_near, s_far = s[..., :-1, None], s[..., 1:, None]                    # [N, R, S-1, 1]
    crossing = (s_far <= levels) & (levels <= s_near)                      # [N, R, S-1, L]
    early = crossing[..., :-1, :]
    last = crossing.shape[-2] - 1
    index = torch.where(early.any(dim=-2), early.to(torch.uint8).argmax(dim=-2), last)  # [N, R, L]
    valid = crossing.gather(-2, index.unsqueeze(-2)).squeeze(-2)
    s_lo = s_near.squeeze(-1).gather(-1, index)                           # field at the near point
    s_hi = s_far.squeeze(-1).gather(-1, index)
    gather_points = index.unsqueeze(-1).expand(*index.shape, 3)
    x_near = points.gather(-2, gather_points)
    x_far = points.gather(-2, gather_points + 1)
    drop = s_hi - s_lo
    steep = drop.abs() > MIN_INTERVAL_DROP
    safe_drop = torch.where(steep, drop, torch.full_like(drop, MIN_INTERVAL_DROP))
    weight_near = ((s_hi - levels) / safe_drop).unsqueeze(-1)
    weight_far = ((levels - s_lo) / safe_drop).unsqueeze(-1)
    interpolated = weight_near * x_near + weight_far * x_far
    return torch.where((valid & steep).unsqueeze(-1), interpolated, x_far), valid


@persistence.persistent_class
class GramRF(torch.nn.Module):
    """The radiance network: pi-GAN's FiLM-SIREN with multi-level heads and one view-dependent colour layer."""

    def __init__(self, z_dim=100, hidden_dim=256, normalize=0.24, sigma_clamp_mode='softplus',
                 rgb_clamp_mode='widen_sigmoid'):
        super().__init__()
        self.z_dim = z_dim
        self.hidden_dim = hidden_dim
        self.sigma_clamp_mode = sigma_clamp_mode
        self.rgb_clamp_mode = rgb_clamp_mode
        self.avg_frequencies = None
        self.avg_phase_shifts = None
        self.network = torch.nn.ModuleList([FiLMLayer(3 if i == 0 else hidden_dim, hidden_dim) for i in range(8)])
        self.color_layer = torch.nn.ModuleList([FiLMLayer(hidden_dim + 3, hidden_dim)])
        self.output_sigma = torch.nn.ModuleList([torch.nn.Linear(hidden_dim, 1) for _ in range(7)])
        self.output_color = torch.nn.ModuleList([torch.nn.Linear(hidden_dim, 3) for _ in range(7)])
        self.mapping_network = CustomMappingNetwork(z_dim, 256, (len(self.network) + 1) * hidden_dim * 2)
        with torch.no_grad():
            for module in [*self.network, *self.color_layer]:
                _siren_uniform(module.layer)
            for linear in [*self.output_sigma, *self.output_color]:
                _siren_uniform(linear)
            _first_film_uniform(self.network[0].layer)
        self.gridwarper = UniformBoxWarp(normalize)

    def forward_with_frequencies_phase_shifts(self, points, frequencies, phase_shifts, ray_directions, eps=1e-3):
        """[N, M, 4] (rgb, sigma) at points [N, M, 3] seen along ray_directions [N, M, 3]."""
        frequencies = frequencies * 15 + 30
        h = self.hidden_dim
        x = self.gridwarper(points)
        sigma = rgb = 0
        for index, layer in enumerate(self.network):
            x = layer(x, frequencies[..., index * h:(index + 1) * h], phase_shifts[..., index * h:(index + 1) * h])
            if index == 0:
                continue
            feature = x
            if index == len(self.network) - 1:
                views = len(self.network) * h
                feature = self.color_layer[0](torch.cat([ray_directions, x], dim=-1),
                                              frequencies[..., views:views + h], phase_shifts[..., views:views + h])
            sigma = sigma + self.output_sigma[index - 1](x)
            rgb = rgb + self.output_color[index - 1](feature)
        if self.rgb_clamp_mode == 'sigmoid':
            rgb = torch.sigmoid(rgb)
        elif self.rgb_clamp_mode == 'widen_sigmoid':
            rgb = torch.sigmoid(rgb) * (1 + 2 * eps) - eps
        if self.sigma_clamp_mode == 'relu':
            sigma = F.relu(sigma)
        elif self.sigma_clamp_mode == 'softplus':
            sigma = F.softplus(sigma)
        return torch.cat([rgb, sigma], dim=-1)


@persistence.persistent_class
class Gram(torch.nn.Module):
    """The manifold predictor and the radiance network."""

    def __init__(self, z_dim=256, hidden_dim=256, normalize=0.24, sigma_clamp_mode='softplus',
                 rgb_clamp_mode='widen_sigmoid', **sample_network_kwargs):
        super().__init__()
        self.sample_network = GramSample(**sample_network_kwargs)
        self.rf_network = GramRF(z_dim, hidden_dim, normalize, sigma_clamp_mode, rgb_clamp_mode)

# ----------------------------------------------------------------------------------------------
# Rendering.


@persistence.persistent_class
class ManifoldRenderer(torch.nn.Module):
    """GRAM's renderer options (its ManifoldRenderer's attributes; users set e.g. lock_view_dependence).

    A module without tensors here (a plain object in GRAM), so that pickles keep options set after
    construction: they are its state attributes.
    """

    state_attributes = ('num_manifolds', 'levels_start', 'levels_end', 'num_samples', 'last_back', 'white_back',
                        'background', 'delta_alpha', 'delta_final', 'lock_view_dependence')

    def __init__(self, num_manifolds, levels_start, levels_end, num_samples, last_back=False, white_back=False,
                 background=True, delta_alpha=0.04, delta_final=1e10, lock_view_dependence=False):
        super().__init__()
        self.num_manifolds = num_manifolds
        self.levels_start = levels_start
        self.levels_end = levels_end
        self.num_samples = num_samples
        self.last_back = last_back
        self.white_back = white_back
        self.background = background
        self.delta_alpha = delta_alpha
        self.delta_final = delta_final if background else delta_alpha  # as official: no opaque end without a background
        self.lock_view_dependence = lock_view_dependence

    def levels(self, device):
        count = self.num_manifolds - 1 if self.background else self.num_manifolds
        return torch.linspace(self.levels_start, self.levels_end, count, device=device)


def composite(rgb, sigma, depth, valid, background_index, renderer):
    """(colour [N, R, 3] in [0, 1], depth [N, R], weights [N, R, K]) of samples [N, R, K] in any order.

    GRAM's fancy_integration after its sort by distance; `background_index` (or None) is the index of
    the background sample, which gets delta_final like the farthest sample.
    """
    depth, order = depth.sort(dim=-1)
    rgb = rgb.gather(-2, order.unsqueeze(-1).expand_as(rgb))
    sigma, valid = sigma.gather(-1, order), valid.gather(-1, order)
    deltas = torch.full_like(sigma, renderer.delta_alpha)
    deltas[..., -1] = renderer.delta_final
    if background_index is not None:
        deltas = torch.where(order == background_index, torch.full_like(deltas, renderer.delta_final), deltas)
    alpha = -torch.expm1(-deltas * sigma) * valid
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha + 1e-10], dim=-1), dim=-1)
    weights = alpha * transmittance[..., :-1]
    total = weights.sum(-1)
    if renderer.last_back:
        weights = torch.cat([weights[..., :-1], weights[..., -1:] + (1 - total)[..., None]], dim=-1)
    colour = (weights.unsqueeze(-1) * rgb).sum(-2)
    out_depth = (weights * depth).sum(-1) / total
    if renderer.white_back:
        colour = colour + (1 - total).unsqueeze(-1)
    return colour, out_depth, weights


# ----------------------------------------------------------------------------------------------
# The generator.


DEFAULT_RAY_CHUNK = 2 ** 15  # rays per chunk over the whole batch
# On the CPU, chunks of 2 ** 8 rays (about 5k radiance-network points, 16k field samples) rendered the
# FFHQ_default network at 64 x 64 about 1.4x faster than chunks of 2 ** 12 (1.27 s against 1.79 s, 2
# cores): each [points, 256] float32 activation stays a few MiB, under glibc's mmap threshold, so the
# temporaries come back from the heap instead of being mapped and page-faulted afresh every layer (the
# page faults showed as aten::copy_, a third of the time, the bias copies of addmm into fresh memory).
CPU_RAY_CHUNK = 2 ** 8


def default_ray_chunk(device):
    """The rays per chunk on `device` when the generator's ray_chunk is None: CPU_RAY_CHUNK on the CPU."""
    return CPU_RAY_CHUNK if torch.device(device).type == 'cpu' else DEFAULT_RAY_CHUNK


@persistence.persistent_class
class GramGenerator(torch.nn.Module):
    """GRAM's generator: official constructor arguments first, ours keyword-only (see the module docstring)."""

    label_kind = 'camera'
    synthesis_options = ('camera',)
    state_attributes = ('epoch', 'step', 'legacy_rays', 'ray_chunk', 'label_scale')
    image_modes = ('image', 'image_depth')
    mode_options = {'image_depth': {'return_depth': True}}  # depth on request: a dict {'image', 'image_depth'}

    def __init__(self, z_dim, img_size=None, h_stddev=0.3, v_stddev=0.155, h_mean=math.pi / 2, v_mean=math.pi / 2,
                 sample_dist='gaussian', representation_kwargs=None, renderer_kwargs=None, partial_grad=False, *,
                 fov=12, ray_start=0.88, ray_end=1.12, legacy_rays=False, ray_chunk=None, label_scale=1.0,
                 c_dim=25, img_resolution=None, img_channels=3, label_kind='camera'):
        super().__init__()
        if img_size is None:
            img_size = img_resolution
        if img_size is None or (img_resolution is not None and img_resolution != img_size):
            raise ValueError(f'GramGenerator renders img_size x img_size images; got img_size={img_size}, '
                             f'img_resolution={img_resolution}.')
        if c_dim != 25 or img_channels != 3 or label_kind != 'camera':
            raise ValueError(f'GramGenerator renders RGB images of 25-float camera labels; got c_dim={c_dim}, '
                             f'img_channels={img_channels}, label_kind={label_kind!r}.')
        self.z_dim = z_dim
        self.img_size = img_size
        self.h_stddev, self.v_stddev, self.h_mean, self.v_mean = h_stddev, v_stddev, h_mean, v_mean
        self.sample_dist = sample_dist
        self.partial_grad = partial_grad  # stored as official; GRAM's forward() never uses it
        self.representation = Gram(z_dim, **(representation_kwargs or {}))
        self.renderer = ManifoldRenderer(**(renderer_kwargs or {}))
        self.fov, self.ray_start, self.ray_end = fov, ray_start, ray_end
        self.legacy_rays = legacy_rays
        self.ray_chunk = ray_chunk
        self.label_scale = float(label_scale)
        self.epoch = 0
        self.step = 0
        # Our contract.
        self.c_dim = 25
        self.img_resolution = img_size
        self.img_channels = 3
        self.w_dim = 2 * (len(self.representation.rf_network.network) + 1) * self.representation.rf_network.hidden_dim
        self.num_ws = 1
        self._w_avg = None  # (parameter versions, w_avg): recomputed when the mapping's weights change

    # -- cameras -------------------------------------------------------------------------------

    def sample_labels(self, batch_size, device='cpu', generator=None):
        """(labels [N, 25], camera_pos [N, 2] = (phi, theta)) drawn from GRAM's pose prior of this generator."""
        from training import cameras  # a late import keeps the pickled source's imports to torch_utils and rendering
        phi, theta = cameras.sample_gram_poses(self.sample_dist, self.h_mean, self.v_mean, self.h_stddev, self.v_stddev,
                                               batch_size, device=device, generator=generator)
        labels = cameras.gram_pose_to_label(phi, theta, self.fov, radius=1 / self.label_scale)  # in label units
        return labels.to(device), torch.stack([phi, theta], dim=-1)

    @property
    def default_camera(self):
        """The scripts' default camera (training.generation.default_camera): GRAM's, in the labels' units."""
        from training import cameras
        return dict(radius=1.0 / self.label_scale, pivot=(0.0, 0.0, 0.0), focal=cameras.gram_focal(self.fov))

    # -- mapping -------------------------------------------------------------------------------

    @property
    def w_avg(self):
        """[w_dim]: the mean of ws over TRUNCATION_SAMPLES fixed z (GRAM's get_avg_w, made reproducible)."""
        mapping = self.representation.rf_network.mapping_network
        key = tuple((p.data_ptr(), p._version) for p in mapping.parameters())
        if self._w_avg is None or self._w_avg[0] != key:
            device = next(mapping.parameters()).device
            z = torch.randn([TRUNCATION_SAMPLES, self.z_dim], generator=torch.Generator().manual_seed(0)).to(device)
            with torch.no_grad():
                self._w_avg = (key, torch.cat(mapping(z), dim=-1).mean(0))
        return self._w_avg[1]

    def mapping(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        """ws [N, 1, w_dim]: the mapping network's frequencies and phase shifts (c is not used, as in GRAM)."""
        _ = c, truncation_cutoff, update_emas
        ws = torch.cat(self.representation.rf_network.mapping_network(z), dim=-1).unsqueeze(1)
        if truncation_psi != 1:
            ws = self.w_avg.to(ws.dtype).lerp(ws, truncation_psi)
        return ws

    # -- synthesis -----------------------------------------------------------------------------

    def _rays(self, c, resolution):
        uv = rays.border_uv(resolution, c.device, c.dtype) if self.legacy_rays else None
        return rays.sample_rays_from_labels(c, resolution, uv=uv)

    def _render_rays(self, ws, origins, dirs):
        """(colour [N, R, 3] in [0, 1], depth [N, R]) of rays [N, R, 3]."""
        renderer = self.renderer
        depths = torch.linspace(self.ray_start, self.ray_end, renderer.num_samples, device=dirs.device, dtype=dirs.dtype)
        with torch.no_grad():
            samples = origins.unsqueeze(2) + dirs.unsqueeze(2) * depths.reshape(1, 1, -1, 1)  # [N, R, S, 3]
        field = self.representation.sample_network(samples).squeeze(-1)
        points, valid = first_crossings(samples, field, renderer.levels(dirs.device))  # [N, R, L, 3], [N, R, L]
        background_index = None
        if renderer.background:
            with torch.no_grad():
                t = (BACKGROUND_PLANE_Z - origins[..., 2:]) / dirs[..., 2:]
                back = origins + dirs * t
            points = torch.cat([points, back.unsqueeze(2)], dim=2)
            valid = torch.cat([valid, torch.ones_like(valid[..., :1])], dim=2)
            background_index = points.shape[2] - 1
        with torch.no_grad():
            distance = (points - origins.unsqueeze(2)).norm(dim=-1)        # [N, R, K]
        if renderer.lock_view_dependence:
            views = torch.zeros_like(points)
            views[..., 2] = -1
        else:
            views = dirs.unsqueeze(2).expand_as(points)
        # Only valid samples reach the radiance network (invalid ones have alpha 0); last_back needs all.
        evaluate = valid | renderer.last_back
        rgb_sigma = self._radiance(ws, points, views, evaluate)
        colour, depth, _ = composite(rgb_sigma[..., :3], rgb_sigma[..., 3], distance, valid.to(points.dtype),
                                     background_index, renderer)
        return colour, depth

    def _radiance(self, ws, points, views, evaluate):
        """[N, R, K, 4] (rgb, sigma) where `evaluate` [N, R, K], zeros elsewhere."""
        rf = self.representation.rf_network
        frequencies, phases = ws[:, 0].chunk(2, dim=-1)
        out = points.new_zeros([*points.shape[:-1], 4])
        for sample in range(points.shape[0]):  # one sample's frequencies at a time: no per-point copies of them
            index = evaluate[sample].nonzero(as_tuple=True)
            values = rf.forward_with_frequencies_phase_shifts(
                points[sample][index].unsqueeze(0), frequencies[sample:sample + 1], phases[sample:sample + 1],
                views[sample][index].unsqueeze(0)).squeeze(0)
            out = out.index_put((torch.full_like(index[0], sample), *index), values.to(out.dtype))  # autocast: float16
        return out

    def synthesis(self, ws, c, resolution=None, return_depth=False, patch=None, update_emas=False):
        """The image [N, 3, R, R] in [-1, 1] of ws [N, 1, w_dim] seen by cameras c [N, 25] (R: img_size).

        patch=(index, count): only the pixels [R R index // count, R R (index + 1) // count) of the
        row-major image, as [N, 3, P] (GRAM's render_patch; for its exact patch-split training).
        """
        _ = update_emas
        resolution = self.img_size if resolution is None else int(resolution)
        c = torch.as_tensor(c, device=ws.device, dtype=ws.dtype)
        if c.ndim != 2 or c.shape != (ws.shape[0], 25):
            raise ValueError(f'GramGenerator needs [N, 25] camera labels for {ws.shape[0]} latents; got {list(c.shape)}.')
        if self.label_scale != 1:  # the labels' world in GRAM's units: scale the camera positions
            c = torch.cat([c[:, :16].reshape(-1, 4, 4)[:, :3].reshape(-1, 12) * torch.tensor(
                [1, 1, 1, self.label_scale] * 3, dtype=c.dtype, device=c.device), c[:, 12:]], dim=1)
        origins, dirs = self._rays(c, resolution)
        chunk = max(1, (self.ray_chunk or default_ray_chunk(dirs.device)) // ws.shape[0])  # rays of each image
        if patch is not None:
            index, count = patch
            pixels = slice(resolution * resolution * index // count, resolution * resolution * (index + 1) // count)
            origins, dirs = origins[:, pixels], dirs[:, pixels]
        colours, depths = [], []
        for start in range(0, dirs.shape[1], chunk):
            part = slice(start, start + chunk)
            colour, depth = self._render_rays(ws, origins[:, part], dirs[:, part])
            colours.append(colour)
            depths.append(depth)
        colour = torch.cat(colours, dim=1).permute(0, 2, 1) * 2 - 1                       # [N, 3, rays]
        depth = torch.cat(depths, dim=1).unsqueeze(1) / self.label_scale                # [N, 1, rays]
        if patch is None:
            colour = colour.reshape(ws.shape[0], 3, resolution, resolution)
            depth = depth.reshape(ws.shape[0], 1, resolution, resolution)
        return {'image': colour, 'image_depth': depth} if return_depth else colour

    def forward(self, z, c=None, truncation_psi=1, truncation_cutoff=None, update_emas=False, resolution=None,
                return_depth=False):
        if c is None:
            c, _ = self.sample_labels(z.shape[0], device=z.device)
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, c, resolution=resolution, return_depth=return_depth)


# ----------------------------------------------------------------------------------------------
# The discriminator.


@persistence.persistent_class
class AddCoords(torch.nn.Module):
    """Appends two coordinate channels in [-1, 1]: the row coordinate, then the column coordinate."""

    def forward(self, x):
        batch, _, height, width = x.shape
        rows = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype).reshape(1, 1, height, 1)
        cols = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype).reshape(1, 1, 1, width)
        return torch.cat([x, rows.expand(batch, 1, height, width), cols.expand(batch, 1, height, width)], dim=1)


@persistence.persistent_class
class CoordConv(torch.nn.Module):
    def __init__(self, in_channels, out_channels, **conv_kwargs):
        super().__init__()
        self.addcoords = AddCoords()
        self.conv = torch.nn.Conv2d(in_channels + 2, out_channels, **conv_kwargs)

    def forward(self, x):
        return self.conv(self.addcoords(x))


@persistence.persistent_class
class ResidualCoordConvBlock(torch.nn.Module):
    """Two 3x3 CoordConvs with LeakyReLU 0.2, 2x average pooling, a 1x1 skip projection, sum / sqrt(2)."""

    def __init__(self, inplanes, planes, kernel_size=3, stride=1, downsample=False):
        super().__init__()
        padding = kernel_size // 2
        self.network = torch.nn.Sequential(
            CoordConv(inplanes, planes, kernel_size=kernel_size, stride=stride, padding=padding),
            torch.nn.LeakyReLU(0.2, inplace=True),
            CoordConv(planes, planes, kernel_size=kernel_size, padding=padding),
            torch.nn.LeakyReLU(0.2, inplace=True))
        self.proj = torch.nn.Conv2d(inplanes, planes, 1) if inplanes != planes else None
        self.downsample = downsample

    def forward(self, x):
        y = self.network(x)
        if self.downsample:
            y, x = F.avg_pool2d(y, 2), F.avg_pool2d(x, 2)
        if self.proj is not None:
            x = self.proj(x)
        return (y + x) / math.sqrt(2)


@persistence.persistent_class
class AdapterBlock(torch.nn.Module):
    def __init__(self, img_channels, output_channels):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Conv2d(img_channels, output_channels, 1), torch.nn.LeakyReLU(0.2))

    def forward(self, x):
        return self.model(x)


@persistence.persistent_class
class GramDiscriminator(torch.nn.Module):
    """GRAM's discriminator: logits [N, 1], and with return_pose=True also the regressed (phi, theta) [N, 2]."""

    def __init__(self, img_size=None, img_channels=3, *, max_channels=400, c_dim=0, img_resolution=None):
        super().__init__()
        img_size = img_resolution if img_size is None else img_size
        self.img_size = img_size
        self.img_size_log2 = int(np.log2(img_size))
        if 2 ** self.img_size_log2 != img_size or not 4 <= img_size <= 2 ** 12:
            raise ValueError(f'GramDiscriminator needs a power-of-two image size from 4 to 4096, got {img_size}.')
        # Block widths min(400, 2^i) as official; max_channels (ours) narrows them for small CPU models.
        widths = [int(min(max_channels, 400, 2 ** i)) for i in range(13 - self.img_size_log2, 13)]
        self.layers = torch.nn.ModuleList([ResidualCoordConvBlock(a, b, downsample=True)
                                           for a, b in zip(widths[:-1], widths[1:])])
        self.fromRGB = AdapterBlock(img_channels, widths[0])
        self.final_layer = torch.nn.Conv2d(widths[-1], 1 + 2, 2)
        self.c_dim = c_dim  # GRAM's D sees no label
        self.img_resolution = img_size
        self.img_channels = img_channels
        self.epoch = 0
        self.step = 0

    def forward(self, img, c=None, update_emas=False, return_pose=False):
        _ = c, update_emas
        x = self.fromRGB(img)
        for layer in self.layers:
            x = layer(x)
        x = self.final_layer(x).reshape(x.shape[0], -1)
        logits, pose = x[:, :1], x[:, 1:]
        return (logits, pose) if return_pose else logits

# ----------------------------------------------------------------------------------------------

persistence.register_no_exec_module(__name__, [
    UniformBoxWarp, FiLMLayer, CustomMappingNetwork, GramSample, GramRF, Gram, ManifoldRenderer, GramGenerator,
    AddCoords, CoordConv, ResidualCoordConvBlock, AdapterBlock, GramDiscriminator])
# GRAM's layers are plain torch modules (as official, for its state_dict names); in our pickles they are
# submodules of the persistent classes above, rebuilt by them, so the loader keeps only their tensors.
for _module, _name in [('torch.nn.modules.linear', 'Linear'), ('torch.nn.modules.conv', 'Conv2d'),
                       ('torch.nn.modules.activation', 'ReLU'), ('torch.nn.modules.activation', 'LeakyReLU')]:
    persistence.register_no_exec_plain_module(_module, _name)
