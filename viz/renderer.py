"""One frame of the visualizer: a loaded generator, the page's settings, and the image they give.

What the page may set is what the network declares (training.capabilities), described once by
`describe(G)`; `Renderer.render(settings)` checks the settings against the same declarations (through
training.generation, the sampling scripts' checks) and returns uint8 pixels. Nothing here knows a
model family by name: a new family shows up with the controls its declarations give.

Settings (a dict from the page, every key optional):
  seed, seed2 (ints, 0 to 2^32 - 1), blend (0..1: W moves from seed's toward seed2's), psi, cutoff,
  class, noise_mode; camera {yaw, pitch (degrees, about the frontal pose), radius, fov (degrees)};
  translate [x, y] (image sizes), rotate (degrees, StyleGAN3), scale, zoom (CREPS); image_mode;
  sample_mult, nrr, resolution (volume renderers); layer (a name of describe(G)['layers']) with channels
  (1 or 3), channel (the first shown), normalize and gain_db, as StyleGAN3's visualizer shows layers.
Mapping results (ws) are cached per (seed, psi, cutoff, mapping label), so a camera or view change
only re-runs the synthesis.
"""

import collections
import math
import time

import numpy as np
import torch

from training import cameras, capabilities, generation

MAX_SIDE = 1024          # no render larger than this per side (pixels)
MAX_NRR = 512            # EG3D's neural rendering resolution
MAX_SAMPLE_MULT = 8.0    # samples per ray, times the trained number
MAX_LAYERS = 256         # feature-map layers listed per network
MAPPING_CACHE = 256      # cached ws entries per network
NOISE_MODES = ('const', 'random', 'none')


class SettingsError(ValueError):
    """A setting the network cannot use or that is out of range: one sentence for the page."""


def _number(settings, key, default, lo=-math.inf, hi=math.inf, integer=False):
    value = settings.get(key, default)
    if value is None:
        return None
    try:
        number = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise SettingsError(f'{key} must be a number, got {value!r}.') from None
    if integer and float(value) != number:
        raise SettingsError(f'{key} must be a whole number, got {value!r}.')
    if not (math.isfinite(number) and lo <= number <= hi):
        raise SettingsError(f'{key}={value!r} is out of range [{lo:.10g}, {hi:.10g}].')
    return number


def _layer_modules(G):
    """{name: module} whose outputs the page may show: G.synthesis's submodules, or (where synthesis is a method of G,
    as EG3D's) G's own, less the mapping's."""
    root = G.synthesis if isinstance(G.synthesis, torch.nn.Module) else G
    return {name: module for name, module in root.named_modules()
            if name and not (root is G and (name == 'mapping' or name.startswith('mapping.')))}


def _feature_layers(G, device):
    """[(name, [C, H, W])] of the synthesis modules whose output (or first output) is a feature map, in call order."""
    seen, hooks = [], []

    def hook(name):
        def record(_module, _inputs, output):
            first = output[0] if isinstance(output, (tuple, list)) and output else output
            if isinstance(first, torch.Tensor) and first.ndim == 4 and len(seen) < MAX_LAYERS \
                    and name not in {n for n, _ in seen}:
                seen.append((name, list(first.shape[1:])))
        return record
    for name, module in _layer_modules(G).items():
        hooks.append(module.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode():
            z = torch.zeros([1, G.z_dim], device=device)
            c = _default_label(G, device)
            ws = G.mapping(z, _mapping_label(G, c))
            generation.synthesize(G, ws, c, **_probe_view(G))
    finally:
        for handle in hooks:
            handle.remove()
    return seen


def _probe_view(G):
    return {'resolution': min(G.img_resolution, 64)} if capabilities.accepts(G, 'resolution') else {}


def _default_label(G, device):
    if capabilities.label_kind(G) == 'camera':
        camera = generation.default_camera(G)
        return cameras.lookat_labels([0.0], [0.0], radius=camera['radius'], pivot=camera['pivot'],
                                     focal=camera['focal']).to(device)
    return generation.class_label(G, 0 if G.c_dim else None).to(device)


def _mapping_label(G, c):
    fixed = generation.mapping_label(G, c.device)  # EG3D's conditioning camera; None: the view's own label
    return c if fixed is None else fixed


def describe(G, layers=()):
    """What the page may show for G: its sizes, label, and the controls its declarations allow."""
    kind = capabilities.label_kind(G)
    controls = {
        'class': G.c_dim if kind == 'class' else 0,
        'noise_mode': capabilities.accepts(G, 'noise_mode'),
        'transform': capabilities.accepts(G, 'transform'),
        'scale': capabilities.accepts(G, 'scale'),
        'view': capabilities.accepts(G, 'view'),
        'image_modes': list(capabilities.image_modes(G)),
        'nrr': int(getattr(G, 'neural_rendering_resolution', 0) or 0) if capabilities.accepts(G, 'render') else None,
        'sample_mult': capabilities.accepts(G, 'render') or capabilities.accepts(G, 'ray_step_multiplier'),
        'resolution': G.img_resolution if capabilities.accepts(G, 'resolution') else None,
        'camera': None,
    }
    if kind == 'camera':
        camera = generation.default_camera(G)
        controls['camera'] = {'radius': camera['radius'], 'fov': cameras.focal_to_fov(camera['focal'])}
    return {'name': generation.network_name(G), 'z_dim': int(G.z_dim), 'c_dim': int(G.c_dim), 'label_kind': kind,
            'img_resolution': int(G.img_resolution), 'num_ws': int(getattr(G, 'num_ws', 0) or 0),
            'controls': controls, 'layers': [{'name': name, 'shape': shape} for name, shape in layers],
            'limits': {'max_side': MAX_SIDE, 'max_nrr': MAX_NRR, 'max_sample_mult': MAX_SAMPLE_MULT}}


class Renderer:
    """Renders frames of one loaded generator G (on `device`), caching its mapping results."""

    def __init__(self, G, device):
        self.G = G
        self.device = torch.device(device)
        self._ws = collections.OrderedDict()
        # EG3D's render options live in G; each frame starts from the loaded ones.
        self._nrr = getattr(G, 'neural_rendering_resolution', None)
        self._rendering_kwargs = dict(getattr(G, 'rendering_kwargs', None) or {})
        self.layers = _feature_layers(G, self.device)
        self.description = describe(G, self.layers)

    # ------------------------------------------------------------------------------------------
    # Settings -> network inputs.

    def label(self, settings):
        """[1, c_dim] label of the settings: the camera, the class, or empty."""
        G = self.G
        if capabilities.label_kind(G) == 'camera':
            camera = dict(settings.get('camera') or {})
            default = generation.default_camera(G)
            yaw = _number(camera, 'yaw', 0.0, -180, 180)
            pitch = _number(camera, 'pitch', 0.0, -89, 89)
            radius = _number(camera, 'radius', default['radius'], 1e-3, 1e3)
            fov = camera.get('fov')
            focal = default['focal'] if fov is None else cameras.fov_to_focal(_number(camera, 'fov', None, 0.1, 179))
            return cameras.lookat_labels([math.radians(yaw)], [math.radians(pitch)], radius=radius,
                                         pivot=default['pivot'], focal=focal).to(self.device)
        if settings.get('camera'):
            raise SettingsError('This network has no camera input; the camera controls do not apply.')
        if G.c_dim == 0:
            return torch.zeros([1, 0], device=self.device)
        index = _number(settings, 'class', 0, 0, G.c_dim - 1, integer=True)
        return generation.class_label(G, index).to(self.device)

    def ws(self, seed, psi, cutoff, mapping_c):
        """G.mapping of seed's latent under mapping_c [1, c_dim], cached."""
        key = (seed, psi, cutoff, mapping_c.cpu().numpy().tobytes())
        if key in self._ws:
            self._ws.move_to_end(key)
            return self._ws[key]
        z = generation.latents([seed], self.G.z_dim, self.device)
        with torch.inference_mode():
            ws = self.G.mapping(z, mapping_c, truncation_psi=psi, truncation_cutoff=cutoff)
        self._ws[key] = ws
        while len(self._ws) > MAPPING_CACHE:
            self._ws.popitem(last=False)
        return ws

    def view(self, settings):
        """(synthesis keywords, (height, width)) of the view settings, checked by training.generation."""
        G = self.G
        translate = settings.get('translate') or (0.0, 0.0)
        if not (isinstance(translate, (list, tuple)) and len(translate) == 2):
            raise SettingsError('translate must be [x, y].')
        translate = tuple(_number({f'translate {axis}': value}, f'translate {axis}', 0.0, -100, 100)
                          for axis, value in zip('xy', translate))
        scale = _number(settings, 'scale', None, 1e-3, 1e3)
        zoom = _number(settings, 'zoom', None, 1e-3, 1e3)
        rotate = _number(settings, 'rotate', 0.0, -360, 360)
        resolution = _number(settings, 'resolution', None, 1, MAX_SIDE, integer=True)
        kwargs, (height, width) = generation.prepare_view(G, scale=scale, translate=translate, zoom=zoom, rotate=rotate,
                                                          resolution=resolution)
        if max(height, width) > MAX_SIDE:
            raise SettingsError(f'The view would be {width}x{height} pixels; the visualizer renders at most {MAX_SIDE} '
                                f'per side (lower the scale or resolution).')
        nrr = _number(settings, 'nrr', None, 1, MAX_NRR, integer=True)
        sample_mult = _number(settings, 'sample_mult', None, 0.05, MAX_SAMPLE_MULT)
        if self._nrr is not None:
            G.neural_rendering_resolution = self._nrr
        if self._rendering_kwargs:
            G.rendering_kwargs = dict(self._rendering_kwargs)
        kwargs.update(generation.set_render_options(G, nrr=nrr, sample_mult=sample_mult))
        return kwargs, (height, width)

    # ------------------------------------------------------------------------------------------

    def render(self, settings):
        """(uint8 pixels [H, W, 3 or 1], milliseconds, layer stats or None) of the settings; SettingsError or
        GenerationError for bad ones."""
        G = self.G
        start = time.perf_counter()
        seed = _number(settings, 'seed', 0, 0, 2 ** 32 - 1, integer=True)
        seed2 = _number(settings, 'seed2', seed, 0, 2 ** 32 - 1, integer=True)
        blend = _number(settings, 'blend', 0.0, 0.0, 1.0)
        psi = _number(settings, 'psi', 1.0, -2.0, 2.0)
        cutoff = _number(settings, 'cutoff', None, 0, 1024, integer=True)
        noise_mode = settings.get('noise_mode', 'const')
        if noise_mode not in NOISE_MODES:
            raise SettingsError(f'noise_mode must be one of {", ".join(NOISE_MODES)}, got {noise_mode!r}.')
        image_mode = settings.get('image_mode', 'image')
        generation.check_image_mode(G, image_mode)
        layer = settings.get('layer')
        names = [name for name, _ in self.layers]
        if layer is not None and layer not in names:
            raise SettingsError(f'layer {layer!r} is not a feature-map layer of this network.')
        c = self.label(settings)
        view, _ = self.view(settings)
        mapping_c = _mapping_label(G, c)
        ws = self.ws(seed, psi, cutoff, mapping_c)
        with torch.inference_mode():
            if blend > 0:
                ws = torch.lerp(ws, self.ws(seed2, psi, cutoff, mapping_c), blend)
            stats = None
            if layer is None:
                out = generation.synthesize(G, ws, c, noise_mode=noise_mode, image_mode=image_mode, **view)
                pixels = generation.to_frames(out.float().cpu(), image_mode)[0]
            else:
                pixels, stats = self._feature_map(ws, c, noise_mode, view, layer, settings)
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)
        return pixels.numpy(), (time.perf_counter() - start) * 1000, stats

    def _feature_map(self, ws, c, noise_mode, view, layer, settings):
        """(uint8 [H, W, channels], stats) of a layer's output, shown as StyleGAN3's visualizer shows it.

        `channels` (1 or 3; 1 when the layer has fewer than 3) from `channel` on (clamped so that they exist),
        each divided by its largest magnitude when `normalize`, times 10^(gain_db / 20), quantised as images.
        The forward stops at the layer. stats: mean, std and largest magnitude of all channels and of those shown.
        """
        module = _layer_modules(self.G)[layer]

        def stop(_module, _inputs, output):
            raise _Captured(output[0] if isinstance(output, (tuple, list)) else output)
        handle = module.register_forward_hook(stop)
        try:
            generation.synthesize(self.G, ws, c, noise_mode=noise_mode, **view)
            raise SettingsError(f'layer {layer!r} did not run for these settings.')
        except _Captured as captured:
            x = captured.output[0].float()                                   # [C, H, W]
        finally:
            handle.remove()
        count = _number(settings, 'channels', 3, 1, 3, integer=True)
        if count not in (1, 3):
            raise SettingsError(f'channels must be 1 or 3, got {count}.')
        count = count if x.shape[0] >= count else 1
        first = max(min(_number(settings, 'channel', 0, 0, 1 << 20, integer=True), x.shape[0] - count), 0)
        shown = x[first:first + count]
        stats = {'all': _stats(x), 'shown': _stats(shown), 'channels': [first, first + count], 'of': int(x.shape[0])}
        if settings.get('normalize'):
            shown = shown / shown.abs().amax(dim=(1, 2), keepdim=True).clamp(1e-8, 1e8)
        shown = shown * 10 ** (_number(settings, 'gain_db', 0.0, -40, 40) / 20)
        return generation.to_uint8(shown.unsqueeze(0).cpu())[0], stats


class _Captured(Exception):
    """Carries a layer's output out of the forward pass (the rest of the network need not run)."""

    def __init__(self, output):
        super().__init__('layer output')
        self.output = output


def _stats(x):
    return {'mean': float(x.mean()), 'std': float(x.std()) if x.numel() > 1 else 0.0, 'max': float(x.abs().max())}


def encode_png(pixels):
    """PNG bytes of uint8 pixels [H, W, C] (C = 1 or 3)."""
    import io
    import PIL.Image
    array = np.ascontiguousarray(pixels)
    image = PIL.Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array, 'L' if array.shape[2] == 1 else 'RGB')
    buffer = io.BytesIO()
    image.save(buffer, format='PNG', compress_level=1)
    return buffer.getvalue()
