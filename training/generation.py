"""Sampling a trained generator: latents from seeds, class or camera labels, images, and W-space paths.

The pieces `gen_images.py` and `gen_video.py` are made of. They work with any generator that follows
the generator contract (`G(z, c)`, `G.mapping`, `G.synthesis`), and read what the network can do
from its declarations (`training.capabilities`): whether its label is a camera, whether its
synthesis takes the camera (`c=`), an output scale (`scale=`), a view of another shape (`size=`), a
moved or magnified view (`translate=`, `zoom=`), a user transform of its input (StyleGAN3), a render
resolution (`resolution=`) or more samples per ray (`ray_step_multiplier=`) of a volume renderer.
"""

import math

import numpy as np
import scipy.interpolate
import torch

import dnnlib
from training import cameras, capabilities, snapshots


class GenerationError(ValueError):
    """An option that does not fit the network; the message is one sentence naming it and the fix."""


# ----------------------------------------------------------------------------------------------
# Loading.

def choose_device(name=None):
    """torch.device for --device (default: CUDA when available, else the CPU)."""
    name = name or ('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cuda' and not torch.cuda.is_available():
        raise GenerationError('--device=cuda was requested but PyTorch sees no CUDA device; use --device=cpu.')
    return torch.device(name)


def load_generator(network, device, trust_code=False, trust_option='--trust-code'):
    """G_ema of a network pickle (path or URL) on `device`, in eval mode, without executing embedded code unless trusted.

    A refusal names `trust_option`, the option of the calling script that sets `trust_code`.
    """
    try:
        data = snapshots.open_network_pkl(network, trust_code=trust_code, trust_option=trust_option)
    except snapshots.NetworkPickleError as error:
        raise GenerationError(str(error)) from None
    return data['G_ema'].to(device).eval().requires_grad_(False)


# ----------------------------------------------------------------------------------------------
# Inputs.

def parse_seeds(text):
    """'0-3,7' -> [0, 1, 2, 3, 7]; seeds are what np.random.RandomState accepts (0 to 2^32 - 1), at most
    dnnlib.util.MAX_RANGE_LENGTH of them (checked before the list is made)."""
    try:
        seeds = dnnlib.util.parse_range(text)
    except ValueError as error:
        raise GenerationError(f'--seeds: {error}') from None
    if not seeds or min(seeds) < 0 or max(seeds) >= 2 ** 32:
        raise GenerationError(f'--seeds={text}: seeds are integers from 0 to 2^32 - 1.')
    return seeds


def latent_for_seed(seed, z_dim):
    """The official z of a seed: np.random.RandomState(seed).randn(z_dim), so seeds match NVIDIA's scripts."""
    return np.random.RandomState(seed).randn(z_dim)


def latents(seeds, z_dim, device='cpu'):
    return torch.from_numpy(np.stack([latent_for_seed(seed, z_dim) for seed in seeds])).float().to(device)


def class_label(G, class_idx):
    """[1, c_dim] one-hot label, or an empty label for an unconditional network."""
    c_dim = getattr(G, 'c_dim', 0)
    if c_dim == 0:
        return torch.zeros([1, 0])
    if class_idx is None:
        raise GenerationError(f'The network is class-conditional ({c_dim} classes); pass --class=N with 0 <= N < {c_dim}.')
    if not 0 <= class_idx < c_dim:
        raise GenerationError(f'--class={class_idx} is out of range: the network has {c_dim} classes (0 to {c_dim - 1}).')
    label = torch.zeros([1, c_dim])
    label[0, class_idx] = 1
    return label


def poses_from_json(data, source='the poses file'):
    """[N, 25] camera labels from parsed JSON: a list of 25-float lists, or a dataset.json {"labels": [[name, label], ...]}."""
    names = None
    if isinstance(data, dict):
        entries = data.get('labels') or []
        names = [entry[0] if isinstance(entry, (list, tuple)) and len(entry) == 2 else None for entry in entries]
        data = [entry[1] if isinstance(entry, (list, tuple)) and len(entry) == 2 else entry for entry in entries]
    try:
        labels = torch.tensor(data, dtype=torch.float32)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.ndim != 2 or labels.shape[0] == 0 or labels.shape[1] != cameras.LABEL_DIM:
        raise GenerationError(f'{source} must hold a non-empty list of {cameras.LABEL_DIM}-float camera labels '
                              f'(or a dataset.json with such labels).')
    for index, problem in enumerate(cameras.problems(labels)):
        if problem is not None:
            which = f"the label of '{names[index]}'" if names and names[index] is not None else f'camera label #{index}'
            raise GenerationError(f'{source}: {which} is not a valid camera: {problem}.')
    return labels


def make_transform(translate, angle_degrees):
    """StyleGAN3's user transform: rotation by `angle_degrees` and translation (x, y), as a 3x3 matrix.

    The network's input is sampled through the inverse of this matrix, so image content moves by
    `translate` (in units of the image size; +x right, +y down) and turns by the angle.
    """
    m = np.eye(3)
    s, c = np.sin(np.radians(angle_degrees)), np.cos(np.radians(angle_degrees))
    m[0] = [c, s, translate[0]]
    m[1] = [-s, c, translate[1]]
    return m


def set_input_transform(G, translate=(0, 0), rotate=0):
    """Write the user transform into G (StyleGAN3); other networks accept only the identity."""
    if not capabilities.accepts(G, 'transform'):
        if tuple(translate) != (0, 0) or rotate != 0:
            raise GenerationError(f'--translate and --rotate need a network with an input transform (StyleGAN3); '
                                  f'this {type(G).__name__} has none.')
        return
    matrix = torch.from_numpy(np.linalg.inv(make_transform(translate, rotate)))
    G.synthesis.input.transform.copy_(matrix)


# ----------------------------------------------------------------------------------------------
# The output view: scale, size, translation, zoom, rotation.

def scaled_side(G, scale=None):
    """The side of G's output at `scale`: int(G.img_resolution * scale), the CREPS rule; G.img_resolution without one."""
    return G.img_resolution if scale is None else int(G.img_resolution * scale)


def scale_for_side(resolution, side):
    """The shortest decimal text s with int(resolution * s) == side (for messages: --scale=s renders that side)."""
    exact = side / resolution
    candidates = [f'{exact:.{digits}g}' for digits in range(1, 18)] + [repr(math.nextafter(exact, math.inf))]
    for text in candidates:
        if int(resolution * float(text)) == side:
            return text
    return candidates[-1]


def network_name(G):
    """'networks_stylegan2.Generator': the class of G and the last part of its module, for messages."""
    return f'{type(G).__module__.rsplit(".", 1)[-1]}.{type(G).__name__}'


def check_scale(G, scale):
    """Refuse a --scale that G cannot render or that gives less than one pixel; returns the side int(img_resolution * scale)."""
    if scale is None:
        return G.img_resolution
    if not capabilities.accepts(G, 'scale'):
        if capabilities.accepts(G, 'resolution'):
            raise GenerationError(f'--scale needs a generator that renders at any scale (CREPS); this {network_name(G)} '
                                  f'renders any size with --resolution=R instead.')
        raise GenerationError(f'--scale needs a generator that renders at any resolution; this {network_name(G)} '
                              f'renders only {G.img_resolution}x{G.img_resolution}.')
    side = scaled_side(G, scale)
    if not scale > 0 or side < 1:
        raise GenerationError(f'--scale={scale:.10g} gives int({G.img_resolution} * {scale:.10g}) = {max(side, 0)} pixels per side; '
                              f'pass --scale={scale_for_side(G.img_resolution, 1)} or more.')
    return side


def prepare_view(G, scale=None, size=None, translate=(0, 0), zoom=None, rotate=0, resolution=None):
    """Check the view options against what G declares; returns (synthesis keywords, (height, width) of the output).

    scale:     'scale': side int(G.img_resolution * scale).
    size:      (height, width) pixels at the pixel pitch of the scale, 'size' (a non-square or larger view).
    translate: (x, y) image sizes, the content moving right and down. A network with StyleGAN3's input
               transform ('transform') gets it there, with `rotate` (degrees, counterclockwise): this
               writes the transform into G, the identity when both are 0. Others take it as the 'view'
               keyword translate=.
    zoom:      magnification about the view centre, 'view' (None: not asked for).
    resolution: R, 'resolution': an R x R render of a volume renderer (GRAM, EpiGRAF), one ray per pixel.
    An option the network cannot use, or a value out of range, raises GenerationError (one sentence).
    The image-size limits are the scripts' (dnnlib.cli.check_image_size on the returned size).
    """
    name = network_name(G)
    kwargs = {}
    side = check_scale(G, scale)
    if scale is not None:
        kwargs['scale'] = scale
    height, width = side, side
    if resolution is not None:
        if not capabilities.accepts(G, 'resolution'):
            raise GenerationError(f'--resolution needs a volume renderer that renders any resolution (EpiGRAF); this '
                                  f'{name} renders only {G.img_resolution}x{G.img_resolution} images'
                                  + (' (it takes --scale).' if capabilities.accepts(G, 'scale') else '.'))
        if scale is not None or size is not None:
            raise GenerationError(f'--resolution gives the output size; do not combine it with '
                                  f'{"--scale" if scale is not None else "--size"}.')
        if int(resolution) < 1:
            raise GenerationError(f'--resolution={resolution} has no pixels; pass a positive side.')
        height = width = int(resolution)
        kwargs['resolution'] = int(resolution)
    if size is not None:
        if not capabilities.accepts(G, 'size'):
            raise GenerationError(f'--size needs a generator that renders views of any shape (coordinate-based, such as '
                                  f'CREPS); this {name} renders only {G.img_resolution}x{G.img_resolution} images.')
        height, width = int(size[0]), int(size[1])
        if height < 1 or width < 1:
            raise GenerationError(f'--size={width}x{height} has no pixels; pass a positive width and height.')
        kwargs['size'] = (height, width)
    translate = tuple(float(v) for v in translate)
    moved = translate != (0.0, 0.0)
    if capabilities.accepts(G, 'transform'):
        set_input_transform(G, translate, rotate)
    else:
        if rotate != 0:
            takes = ' (it takes --translate and --zoom)' if capabilities.accepts(G, 'view') else ''
            raise GenerationError(f'--rotate needs a network with an input transform (StyleGAN3); this {name} has none{takes}.')
        if moved:
            if not capabilities.accepts(G, 'view'):
                raise GenerationError(f'--translate needs a network that can move its content (StyleGAN3\'s input transform, '
                                      f'or the view of a coordinate-based generator such as CREPS); this {name} has neither.')
            kwargs['translate'] = translate
    if zoom is not None:
        if not capabilities.accepts(G, 'view'):
            raise GenerationError(f'--zoom needs a network that can magnify its view (a coordinate-based generator such as '
                                  f'CREPS); this {name} cannot.')
        if not (math.isfinite(zoom) and zoom > 0):
            raise GenerationError(f'--zoom={zoom} must be a finite number above 0.')
        kwargs['zoom'] = float(zoom)
    return kwargs, (height, width)


# ----------------------------------------------------------------------------------------------
# Images.

def check_image_mode(G, mode):
    """Refuse an --image-mode the network does not output."""
    modes = capabilities.image_modes(G)
    if mode not in modes:
        raise GenerationError(f'--image-mode={mode} is not an output of {network_name(G)}; it outputs '
                              f'{", ".join(modes)}.')


def set_render_options(G, nrr=None, sample_mult=None):
    """--nrr (neural rendering resolution) and --sample-mult alias --ray-step-multiplier (samples per ray times M).

    EG3D ('render'): written into the loaded G (rendering_kwargs), as EG3D's scripts; returns {}.
    Networks that take `ray_step_multiplier=` (EpiGRAF): returns {'ray_step_multiplier': M}, synthesis
    keywords for every image (merge them into the view of `prepare_view`); they have no --nrr (their
    rays are the pixels: --resolution).
    """
    if nrr is None and sample_mult is None:
        return {}
    if not capabilities.accepts(G, 'render'):
        if capabilities.accepts(G, 'ray_step_multiplier'):
            if nrr is not None:
                takes = ' (pass --resolution)' if capabilities.accepts(G, 'resolution') else ''
                raise GenerationError(f'--nrr applies to volume renderers with a neural rendering resolution (EG3D); '
                                      f'{network_name(G)} casts one ray per output pixel{takes}.')
            return {'ray_step_multiplier': int(sample_mult) if float(sample_mult).is_integer() else float(sample_mult)}
        given = '--nrr' if nrr is not None else '--sample-mult'
        raise GenerationError(f'{given} applies to volume-rendering networks (EG3D, EpiGRAF); {network_name(G)} '
                              f'renders no rays.')
    if nrr is not None:
        G.neural_rendering_resolution = int(nrr)
    if sample_mult is not None:
        options = dict(G.rendering_kwargs)
        for key in ('depth_resolution', 'depth_resolution_importance'):
            options[key] = int(options[key] * sample_mult)
        if options['depth_resolution'] < 2:
            raise GenerationError(f'--sample-mult={sample_mult:g} leaves fewer than 2 depth samples per ray.')
        G.rendering_kwargs = options
    return {}


def colorize_depth(depth):
    """[N, 1, H, W] depth -> [N, H, W, 3] uint8: near bright yellow, far dark purple, per image over its range."""
    lo = depth.amin(dim=(1, 2, 3), keepdim=True)
    hi = depth.amax(dim=(1, 2, 3), keepdim=True)
    t = (1 - (depth - lo) / (hi - lo).clamp(min=1e-8))[:, 0]  # 1 = near
    ramp = torch.tensor([[0.05, 0.03, 0.2], [0.45, 0.1, 0.5], [0.85, 0.3, 0.35], [0.98, 0.65, 0.15], [0.99, 0.95, 0.6]])
    position = t.clamp(0, 1) * (len(ramp) - 1)
    index = position.floor().long().clamp(max=len(ramp) - 2)
    frac = (position - index).unsqueeze(-1)
    colours = ramp[index] * (1 - frac) + ramp[index + 1] * frac
    return (colours * 255).round().to(torch.uint8)


def synthesize(G, ws, c=None, noise_mode='const', scale=None, image_mode='image', **kwargs):
    """The `image_mode` output of G.synthesis, passing the camera and the noise mode only to networks that take them.

    scale and **kwargs (size=, translate=, zoom=, ...) go to G.synthesis as they are: check them first
    (`prepare_view`, `check_scale`, `check_image_mode`).
    """
    if c is not None and capabilities.accepts(G, 'camera'):
        kwargs['c'] = c
    if capabilities.accepts(G, 'noise_mode'):
        kwargs['noise_mode'] = noise_mode
    if scale is not None:
        kwargs['scale'] = scale
    kwargs.update(capabilities.mode_kwargs(G, [image_mode]))  # outputs a network computes only on request
    return capabilities.output_of(G, G.synthesis(ws, **kwargs), image_mode)


@torch.no_grad()
def generate(G, z, c, truncation_psi=1, truncation_cutoff=None, noise_mode='const', scale=None, batch=8, view=None,
             image_mode='image', mapping_c=None):
    """Float images [N, C, H, W] (about [-1, 1]) for latents z [N, z_dim] and labels c [N, c_dim], `batch` at a time.

    view: more synthesis keywords (those of `prepare_view`: size, translate, zoom; scale may be among them).
    image_mode: another output of the network (capabilities.image_modes), e.g. EG3D's 'image_depth'.
    mapping_c: [1, c_dim] label for the mapping of every image (EG3D's conditioning camera); None: c.
    """
    keywords = dict(view or {})
    if scale is not None:
        keywords['scale'] = scale
    images = []
    for z_part, c_part in zip(z.split(batch), c.split(batch)):
        c_map = c_part if mapping_c is None else mapping_c.expand(len(z_part), -1)
        ws = G.mapping(z_part, c_map, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        images.append(synthesize(G, ws, c_part, noise_mode=noise_mode, image_mode=image_mode, **keywords).float().cpu())
    return torch.cat(images)


def has_density(G):
    """True when G declares a density field for --shapes: `sample_density` (with `density_box`), or EG3D's `sample_mixed`."""
    return callable(getattr(G, 'sample_density', None)) or hasattr(G, 'sample_mixed')


def density_field(G, ws, noise_mode='const'):
    """(points [1, M, 3] -> densities [1, M, 1], side of the cube about the origin, default level) of G's field for ws.

    A network declares `sample_density(ws, points, **block_kwargs)` and `density_box` (and optionally
    `density_level`; see training.capabilities); EG3D's `sample_mixed` spans rendering_kwargs['box_warp'],
    at EG3D's level.
    """
    from training.rendering import shapes
    keywords = dict(noise_mode=noise_mode) if capabilities.accepts(G, 'noise_mode') else {}
    if callable(getattr(G, 'sample_density', None)):
        box = getattr(G, 'density_box', None)
        if box is None:
            raise GenerationError(f'--shapes: {network_name(G)} declares sample_density but no density_box (the side of '
                                  f'the cube that holds its field).')
        return (lambda points: G.sample_density(ws, points, **keywords)), float(box), \
            float(getattr(G, 'density_level', shapes.EG3D_LEVEL))
    if hasattr(G, 'sample_mixed'):
        return (lambda points: G.sample_mixed(points, torch.zeros_like(points), ws, **keywords)['sigma']), \
            float(G.rendering_kwargs['box_warp']), shapes.EG3D_LEVEL
    raise GenerationError(f'--shapes needs a network with a density field (EG3D, EpiGRAF); {network_name(G)} has none.')


@torch.no_grad()
def shape_of(G, z, c, resolution, truncation_psi=1, truncation_cutoff=None, noise_mode='const', level=None):
    """(density grid [R, R, R], vertices, faces) of the radiance field of latent z [1, z_dim] under label c [1, 25].

    The grid spans the network's cube (`density_field`: EG3D's box_warp, or its declared density_box);
    see training.rendering.shapes. level: the iso-level (None: the network's, else EG3D's 10).
    """
    from training.rendering import shapes
    if not has_density(G):
        raise GenerationError(f'--shapes needs a network with a density field (EG3D, EpiGRAF); {network_name(G)} has none.')
    ws = G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
    sample, box, default_level = density_field(G, ws, noise_mode=noise_mode)
    grid = shapes.density_grid(sample, resolution, box, device=z.device)
    try:
        vertices, faces = shapes.mesh_from_grid(grid, box, level=default_level if level is None else level)
    except shapes.NoSurfaceError as error:
        raise GenerationError(f'No surface to export: {error}; pass another --shape-level.') from None
    return grid, vertices, faces


def to_uint8(images):
    """[N, C, H, W] floats in [-1, 1] -> [N, H, W, C] uint8, quantised as the official scripts (x * 127.5 + 128)."""
    return (images.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def tile(images, cols, rows):
    """[N, H, W, C] -> one [rows*H, cols*W, C] grid, row by row; empty cells stay black."""
    n, height, width, channels = images.shape
    if n > cols * rows:
        raise ValueError(f'{n} images do not fit a {cols}x{rows} grid.')
    cells = torch.zeros([rows * cols, height, width, channels], dtype=images.dtype)
    cells[:n] = images
    return cells.reshape(rows, cols, height, width, channels).permute(0, 2, 1, 3, 4).reshape(rows * height, cols * width, channels)


def grid_shape(count):
    """A near-square (cols, rows) grid for `count` images, wider than tall."""
    cols = int(np.ceil(np.sqrt(count)))
    return cols, int(np.ceil(count / cols))


# ----------------------------------------------------------------------------------------------
# Paths through W for videos.

def keyframe_weights(num_keyframes, t, wraps=2, kind='cubic'):
    """[num_keyframes] weights of each keyframe at time `t` (in keyframes) on a looping interpolation.

    The keyframe list is repeated `wraps` times on each side, as NVIDIA's gen_video does, so the
    path is periodic; spline interpolation is linear in the data, so interpolating the identity gives
    the weights once for any number of latents: w(t) = sum_k weights[k] * w_k.
    """
    x = np.arange(-num_keyframes * wraps, num_keyframes * (wraps + 1))
    y = np.tile(np.eye(num_keyframes), [2 * wraps + 1, 1])
    return scipy.interpolate.interp1d(x, y, kind=kind, axis=0)(t % num_keyframes)


def default_camera(G):
    """dict(radius, pivot, focal) of the default camera (looking at `pivot` from `radius` about the world origin).

    What the network declares first: a `default_camera` attribute or property, a dict with any of
    'radius', 'pivot' and 'focal' (normalised focal length) in the units of its labels (e.g. GRAM:
    radius 1, pivot at the origin, the focal of its fov); then a volume renderer's own
    (EG3D's rendering_kwargs avg_camera_radius/pivot); FFHQ's for the rest.
    """
    options = getattr(G, 'rendering_kwargs', None) or {}
    camera = dict(radius=options.get('avg_camera_radius', cameras.FFHQ_RADIUS),
                  pivot=options.get('avg_camera_pivot', cameras.FFHQ_PIVOT), focal=cameras.FFHQ_FOCAL)
    declared = getattr(G, 'default_camera', None)
    if isinstance(declared, dict):
        camera.update({key: declared[key] for key in ('radius', 'pivot', 'focal') if declared.get(key) is not None})
    return dict(radius=float(camera['radius']), pivot=[float(v) for v in camera['pivot']], focal=float(camera['focal']))


def camera_defaults(G):
    """(radius, pivot) of the default camera (`default_camera`)."""
    camera = default_camera(G)
    return camera['radius'], camera['pivot']


def camera_focal(G):
    """The normalised focal length of the default camera (`default_camera`)."""
    return default_camera(G)['focal']


def mapping_label(G, device='cpu'):
    """EG3D's conditioning camera for the mapping of a volume renderer (frontal, at its average radius and pivot,
    as gen_samples.py and gen_videos.py), so that every view shows the same identity; None for other networks,
    whose views are each mapped with their own label."""
    if not capabilities.accepts(G, 'render'):
        return None
    radius, pivot = camera_defaults(G)
    return cameras.lookat_labels([0.0], [0.0], radius=radius, pivot=pivot, focal=cameras.FFHQ_FOCAL).to(device)


def to_frames(images, image_mode='image'):
    """[N, C, H, W] network outputs -> [N, H, W, C] uint8: depth colour-mapped, colours quantised."""
    return colorize_depth(images) if image_mode.endswith('_depth') else to_uint8(images)


@torch.no_grad()
def interpolation_frames(G, z, num_frames, frames_per_keyframe, label_at, grid, truncation_psi=1,
                         truncation_cutoff=None, noise_mode='const', batch=8, view=None, image_mode='image',
                         mapping_c=None):
    """Yield [H, W, C] uint8 video frames that loop through keyframe latents in W.

    z: [cells, num_keyframes, z_dim], one row of keyframes per grid cell (cells = cols * rows of `grid`).
    label_at(frame) -> [1, c_dim]: the label of every cell at that frame (a moving camera, or a fixed class).
    Keyframe k is shown at frame k * frames_per_keyframe; between them W follows a periodic cubic spline.
    The mapping is re-run on a frame only when the label changed (a moving camera may condition it).
    view: more synthesis keywords for every frame (those of `prepare_view`: scale, size, translate, zoom).
    image_mode: the output to show (capabilities.image_modes); mapping_c: [1, c_dim] label of the mapping for
    every frame (EG3D's conditioning camera), instead of the frame's label.
    """
    cells, num_keyframes, z_dim = z.shape
    flat_z = z.reshape(cells * num_keyframes, z_dim)
    previous_label, keyframe_ws = None, None
    for frame in range(num_frames):
        label = label_at(frame).to(z.device)
        map_label = label if mapping_c is None else mapping_c.to(z.device)
        if previous_label is None or not torch.equal(map_label, previous_label):
            keyframe_ws = torch.cat([G.mapping(part, map_label.expand(part.shape[0], -1), truncation_psi=truncation_psi,
                                               truncation_cutoff=truncation_cutoff) for part in flat_z.split(batch)])
            keyframe_ws = keyframe_ws.reshape(cells, num_keyframes, *keyframe_ws.shape[1:])
            previous_label = map_label
        weights = torch.from_numpy(keyframe_weights(num_keyframes, frame / frames_per_keyframe)).to(keyframe_ws)
        ws = torch.einsum('k,nk...->n...', weights, keyframe_ws)
        images = torch.cat([synthesize(G, part, label.expand(part.shape[0], -1), noise_mode=noise_mode,
                                       image_mode=image_mode, **(view or {})).float().cpu()
                            for part in ws.split(batch)])
        yield tile(to_frames(images, image_mode), *grid)
