"""Generate images from a network pickle: one PNG per seed (and camera view), or one grid.

    # Images for seeds 0-3 from a snapshot of train.py, on the CPU.
    python gen_images.py --network=training-runs/00000-stylegan2-shapes-32-gpus1-batch8-gamma1/network-snapshot-000001.pkl \\
        --seeds=0-3 --outdir=out --device=cpu

    # An official StyleGAN3 pickle, truncated, shifted and rotated.
    python gen_images.py --network=https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-r-afhqv2-512x512.pkl \\
        --seeds=2 --trunc=0.7 --translate=0.2,0 --rotate=15 --outdir=out

    # A camera-conditioned network: a yaw sweep of 4 seeds as one grid (rows: seeds, columns: views).
    python gen_images.py --network=snapshot.pkl --seeds=0-3 --yaw=-0.4,-0.2,0,0.2,0.4 --pitch=-0.2 --grid --outdir=out

    # An any-scale generator (CREPS): twice its resolution; a 16:9 view, moved and magnified.
    python gen_images.py --network=creps.pkl --seeds=0-3 --scale=2 --outdir=out
    python gen_images.py --network=creps.pkl --seeds=0-3 --size=1280x720 --translate=0.1,0 --zoom=1.5 --outdir=out

    # EG3D: EG3D's three views of gen_samples.py (yaw +-0.4, pitch -0.2), their depth maps, and the shapes.
    python gen_images.py --network=ffhq512-128.pkl --seeds=0-3 --trunc=0.7 --yaw=0.4,0,-0.4 --pitch=-0.2 --grid --outdir=out
    python gen_images.py --network=ffhq512-128.pkl --seeds=0-3 --image-mode=image_depth --outdir=out/depth
    python gen_images.py --network=ffhq512-128.pkl --seeds=0 --shapes --shape-res=256 --outdir=out/shapes

    # EpiGRAF: 512 x 512 renders with twice the samples per ray it was trained with, their depth, and shapes.
    python gen_images.py --network=epigraf.pkl --seeds=0-3 --resolution=512 --ray-step-multiplier=2 --outdir=out
    python gen_images.py --network=epigraf.pkl --seeds=0-3 --image-mode=image_depth --outdir=out/depth
    python gen_images.py --network=epigraf.pkl --seeds=0 --shapes --shape-res=256 --outdir=out/shapes
"""

import json
import os
import sys

import click
import numpy as np
import PIL.Image
import torch
import tqdm

import dnnlib
from dnnlib import cli
from dnnlib import signals
from training import cameras, capabilities, generation, snapshots


class CommandError(click.ClickException):
    """One sentence on stderr, exit code 1, no traceback."""


def parse_grid(text, default_shape):
    """--grid alone -> the default layout; --grid=COLSxROWS -> that layout."""
    if text == 'auto':
        return default_shape
    try:
        return dnnlib.util.parse_grid_size(text)
    except ValueError:
        raise CommandError(f'--grid={text} is not COLSxROWS (e.g. --grid=4x2), nor --grid alone for an automatic layout.') from None


# ----------------------------------------------------------------------------------------------
# Labels.

CAMERA_OPTIONS = ('yaw', 'pitch', 'radius', 'fov', 'focal', 'pivot', 'poses')


def camera_views(opts, G=None):
    """[V, 25] camera labels from the camera options: --poses, or every (pitch, yaw) pair (yaw varying fastest)."""
    if opts.poses is not None:
        if any(opts[name] is not None for name in CAMERA_OPTIONS if name != 'poses'):
            raise CommandError('--poses gives whole cameras; do not combine it with --yaw, --pitch, --radius, --fov, --focal or --pivot.')
        try:
            with open(opts.poses, encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError) as error:
            raise CommandError(f'Cannot read --poses={opts.poses} ({error}).') from None
        try:
            return generation.poses_from_json(data, source=f'--poses={opts.poses}')
        except generation.GenerationError as error:
            raise CommandError(str(error)) from None
    if opts.fov is not None and opts.focal is not None:
        raise CommandError('Pass either --fov or --focal, not both.')
    yaws = opts.yaw if opts.yaw is not None else [0.0]
    pitches = opts.pitch if opts.pitch is not None else [0.0]
    default_radius, default_pivot = generation.camera_defaults(G)
    pivot = opts.pivot if opts.pivot is not None else default_pivot
    radius = opts.radius if opts.radius is not None else default_radius
    focal = cameras.fov_to_focal(opts.fov) if opts.fov is not None else (opts.focal or generation.camera_focal(G))
    yaw_grid = [yaw for _pitch in pitches for yaw in yaws]
    pitch_grid = [pitch for pitch in pitches for _yaw in yaws]
    return cameras.lookat_labels(yaw_grid, pitch_grid, radius=radius, pivot=pivot, focal=focal)


def labels_for(G, opts):
    """[V, c_dim] labels: one per view for camera-conditioned networks, else one."""
    camera_given = [name for name in CAMERA_OPTIONS if opts[name] is not None]
    camera_net = capabilities.label_kind(G) == 'camera'
    if camera_given and not camera_net:
        raise CommandError(f'--{camera_given[0]} sets a camera, but this network has no camera input '
                           f'(c_dim={G.c_dim}); drop the camera options.')
    if camera_given and opts.class_idx is not None:
        raise CommandError(f'--class uses the label as a class index; it cannot be combined with --{camera_given[0]}.')
    if camera_net and opts.class_idx is not None:
        raise CommandError(f'--class={opts.class_idx} is a class, but this network is camera-conditioned; it takes camera '
                           f'options (--yaw, --pitch, --poses, ...), not --class.')
    if camera_net:
        return camera_views(opts, G)
    if G.c_dim == 0 and opts.class_idx is not None:
        print('warning: --class is ignored for an unconditional network', file=sys.stderr)
        return torch.zeros([1, 0])
    try:
        return generation.class_label(G, opts.class_idx)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None


# ----------------------------------------------------------------------------------------------

def output_names(seeds, num_views, grid):
    if grid:
        return ['grid.png']
    if num_views == 1:
        return [f'seed{seed:04d}.png' for seed in seeds]
    return [f'seed{seed:04d}-view{view:02d}.png' for seed in seeds for view in range(num_views)]


def extra_names(names, seeds, opts):
    """The files besides the PNGs: depth values (.npy) per image, and per seed a mesh and its density grid."""
    extra = []
    if opts.image_mode.endswith('_depth'):
        extra += [os.path.splitext(name)[0] + '.npy' for name in names]
    if opts.shapes:
        extra += [name for seed in seeds for name in (f'seed{seed:04d}.ply', f'seed{seed:04d}_density.npy')]
    return extra


def save_npy(path, array):
    snapshots.atomic_write(path, lambda f: np.save(f, array))


def save_png(path, image):
    """Write one [H, W, C] uint8 image atomically (grayscale networks give 'L' PNGs)."""
    array = image.numpy()
    picture = PIL.Image.fromarray(array[:, :, 0], 'L') if array.shape[2] == 1 else PIL.Image.fromarray(array, 'RGB')
    snapshots.atomic_write(path, lambda f: picture.save(f, format='PNG'))


def prepare_outdir(outdir, names, overwrite):
    existing = [name for name in names if os.path.exists(os.path.join(outdir, name))]
    if existing and not overwrite:
        more = f' (and {len(existing) - 1} more)' if len(existing) > 1 else ''
        raise CommandError(f'{os.path.join(outdir, existing[0])} already exists{more}; pass --overwrite to replace '
                           f'it or choose another --outdir.')
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as error:
        raise CommandError(f'Cannot create --outdir={outdir} ({error.strerror}).') from None


def check_view_size(G, opts, channels):
    """The image-size limits (dnnlib.cli.check_image_size) for --scale, --size and --resolution, checked before any work."""
    if opts.scale is not None:
        side = generation.scaled_side(G, opts.scale)
        cli.check_image_size(side, side, channels, '--scale')
    if opts.size is not None:
        height, width = opts.size
        cli.check_image_size(width, height, channels, '--size')
    if opts.resolution is not None:
        cli.check_image_size(opts.resolution, opts.resolution, channels, '--resolution')


def generate_images(opts):
    cli.check_output_path(opts.outdir, '--outdir', 'dir')
    try:
        seeds = generation.parse_seeds(opts.seeds)
        device = generation.choose_device(opts.device)
        G = generation.load_generator(opts.network, device, trust_code=opts.trust_code)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    views = labels_for(G, opts)
    channels = getattr(G, 'img_channels', 3)
    try:
        view, (height, width) = generation.prepare_view(G, scale=opts.scale, size=opts.size, translate=opts.translate,
                                                        zoom=opts.zoom, rotate=opts.rotate, resolution=opts.resolution)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    check_view_size(G, opts, channels)
    try:
        generation.check_image_mode(G, opts.image_mode)
        view = {**view, **(generation.set_render_options(G, nrr=opts.nrr, sample_mult=opts.sample_mult) or {})}
        if opts.shapes and not generation.has_density(G):
            raise generation.GenerationError(f'--shapes needs a network with a density field (EG3D, EpiGRAF); '
                                             f'{generation.network_name(G)} has none.')
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    depth = opts.image_mode.endswith('_depth')

    num_views = views.shape[0]
    grid = None
    if opts.grid is not None:
        grid = parse_grid(opts.grid, (num_views, len(seeds)) if num_views > 1 else generation.grid_shape(len(seeds)))
        if grid[0] * grid[1] < len(seeds) * num_views:
            raise CommandError(f'--grid={opts.grid} has {grid[0] * grid[1]} cells for {len(seeds) * num_views} images.')
        cli.check_image_size(grid[0] * width, grid[1] * height, channels, '--grid', max_side=None,
                             fix='pass fewer --seeds or a smaller --grid')
    names = output_names(seeds, num_views, grid)
    prepare_outdir(opts.outdir, names + extra_names(names, seeds, opts), opts.overwrite)

    views = views.to(device)
    mapping_c = generation.mapping_label(G, device)
    images, depths = [], []
    num_images = len(seeds) * num_views  # image i: seed i // num_views, view i % num_views
    batches = range(0, num_images, opts.batch)
    for start in tqdm.tqdm(batches, desc='Generating', unit='batch', disable=not sys.stderr.isatty()):
        index = range(start, min(start + opts.batch, num_images))  # latents batch by batch: many seeds stay cheap
        z = generation.latents([seeds[i // num_views] for i in index], G.z_dim, device)
        part = generation.generate(G, z, views[[i % num_views for i in index]],
                                   truncation_psi=opts.trunc, truncation_cutoff=opts.trunc_cutoff,
                                   noise_mode=opts.noise_mode, batch=opts.batch, view=view,
                                   image_mode=opts.image_mode, mapping_c=mapping_c)
        values = part
        part = generation.to_frames(part, opts.image_mode)
        if grid is None:
            for offset, image in enumerate(part):
                save_png(os.path.join(opts.outdir, names[start + offset]), image)
                if depth:
                    save_npy(os.path.join(opts.outdir, os.path.splitext(names[start + offset])[0] + '.npy'),
                             values[offset, 0].numpy())
        else:
            images.append(part)
            if depth:
                depths.append(values[:, 0])
    if grid is not None:
        save_png(os.path.join(opts.outdir, names[0]), generation.tile(torch.cat(images), *grid))
        if depth:
            save_npy(os.path.join(opts.outdir, 'grid.npy'), torch.cat(depths).numpy())
    print(f'Wrote {len(names)} image{"s" if len(names) > 1 else ""} to {opts.outdir}')
    if opts.shapes:
        write_shapes(G, seeds, mapping_c if mapping_c is not None else views[:1], opts, device)


def write_shapes(G, seeds, label, opts, device):
    """Per seed: the density grid (seedNNNN_density.npy, indexed [x, y, z]) and its mesh (seedNNNN.ply)."""
    from training.rendering import shapes
    for seed in tqdm.tqdm(seeds, desc='Shapes', unit='seed', disable=not sys.stderr.isatty()):
        z = generation.latents([seed], G.z_dim, device)
        try:
            grid, vertices, faces = generation.shape_of(G, z, label, opts.shape_res, truncation_psi=opts.trunc,
                                                        truncation_cutoff=opts.trunc_cutoff,
                                                        noise_mode=opts.noise_mode, level=opts.shape_level)
        except generation.GenerationError as error:
            raise CommandError(f'seed {seed}: {error}') from None
        save_npy(os.path.join(opts.outdir, f'seed{seed:04d}_density.npy'), grid)
        snapshots.atomic_write(os.path.join(opts.outdir, f'seed{seed:04d}.ply'),
                               lambda f: shapes.write_ply(f, vertices, faces))
    print(f'Wrote {len(seeds)} mesh{"es" if len(seeds) > 1 else ""} (.ply) and density grid(s) (_density.npy) '
          f'to {opts.outdir}')


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--network', help='Network pickle: path or URL', required=True, metavar='PATH|URL')
@click.option('--seeds', help=f'Seeds, e.g. 0-3,7 (at most {dnnlib.util.MAX_RANGE_LENGTH})', required=True, metavar='LIST')
@click.option('--trunc', help='Truncation psi', type=cli.FiniteFloat(), default=1, show_default=True)
@click.option('--trunc-cutoff', help='Truncate only the first N ws', type=click.IntRange(min=0), metavar='N')
@click.option('--class', 'class_idx', help='Class label (class-conditional networks)', type=int, metavar='INT')
@click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--translate', help='Move the content by X,Y image sizes (+x right, +y down): StyleGAN3 (input transform) or networks with a view (CREPS)', default='0,0', show_default=True, metavar='X,Y', type=cli.FiniteFloatList(count=2))
@click.option('--rotate', help='Turn the content (StyleGAN3) counterclockwise, in degrees', type=cli.FiniteFloat(), default=0, show_default=True, metavar='ANGLE')
@click.option('--zoom', help='Magnify the content about the image centre, for networks with a view (CREPS)  [default: 1]', type=cli.FiniteFloat(min=0, min_open=True), metavar='Z')
@click.option('--yaw', help='Camera yaw(s) in radians from the frontal pose, comma-separated  [default: 0]', metavar='LIST', type=cli.FiniteFloatList())
@click.option('--pitch', help='Camera pitch(es) in radians from the frontal pose, comma-separated (positive: from below)  [default: 0]', metavar='LIST', type=cli.FiniteFloatList())
@click.option('--radius', help=f'Camera distance from the world origin  [default: {cameras.FFHQ_RADIUS}]', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--fov', help='Diagonal field of view in degrees (instead of --focal)', type=cli.FiniteFloat(0, 180, min_open=True, max_open=True))
@click.option('--focal', help=f'Focal length normalised by the image size  [default: the network\'s own, else {cameras.FFHQ_FOCAL}]', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--pivot', help='Point the camera looks at  [default: 0,0,0.2]', metavar='X,Y,Z', type=cli.FiniteFloatList(count=3))
@click.option('--poses', help='JSON file of 25-float camera labels (a list, or a dataset.json)', metavar='FILE')
@click.option('--scale', help=f'Output scale, for generators that render at any resolution: int(resolution * S) pixels per side (at most {cli.MAX_IMAGE_SIDE})', type=cli.FiniteFloat(min=0, min_open=True), metavar='S')
@click.option('--size', help='Output width x height in pixels at the pixel pitch of --scale (a wider, taller or non-square view), for networks that render any shape (CREPS)', metavar='WxH', type=cli.ViewSize())
@click.option('--grid', help='Write one grid.png instead of one file per image: --grid alone (near-square; with several camera views one row per seed) or --grid=COLSxROWS', is_flag=False, flag_value='auto', metavar='[COLSxROWS]')
@click.option('--resolution', help=f'Render R x R images, for volume renderers that render any resolution (EpiGRAF; at most {cli.MAX_IMAGE_SIDE})', type=click.IntRange(min=1), metavar='R')
@click.option('--image-mode', help='Which output of a network with several (EG3D: image, image_raw, image_depth; EpiGRAF, GRAM: image, image_depth); depth is saved as a colour-mapped PNG and its values as .npy', type=click.Choice(['image', 'image_raw', 'image_depth']), default='image', show_default=True)
@click.option('--nrr', help='Neural rendering resolution of a volume renderer (EG3D)  [default: the network\'s]', type=click.IntRange(min=4, max=1024), metavar='INT')
@click.option('--sample-mult', '--ray-step-multiplier', 'sample_mult', help='Multiply the samples per ray of a volume renderer (EG3D, EpiGRAF)  [default: 1, as trained]', type=cli.FiniteFloat(min=0, min_open=True), metavar='M')
@click.option('--shapes', help='Also export each seed\'s shape: a mesh (.ply, marching cubes) and its density grid (.npy)', is_flag=True)
@click.option('--shape-res', help='Density grid points per side for --shapes', type=click.IntRange(min=8, max=1024), default=512, show_default=True)
@click.option('--shape-level', help='Density level of the --shapes surface  [default: the network\'s, else 10 as EG3D]', type=cli.FiniteFloat(), metavar='FLOAT')
@click.option('--batch', help='Images per forward pass', type=click.IntRange(min=1), default=8, show_default=True)
@click.option('--device', help='Where to run  [default: cuda if available, else cpu]', type=click.Choice(['cuda', 'cpu']))
@click.option('--trust-code', help='Execute code embedded in the pickle (only for files you trust)', is_flag=True)
@click.option('--overwrite', help='Replace images that already exist in --outdir', is_flag=True)
@click.option('--outdir', help='Where to save the images', required=True, metavar='DIR')
@signals.exit_on_interrupt
def main(**kwargs):
    """Generate images using a pretrained network pickle.

    Writes <outdir>/seed<NNNN>.png for each seed (seed<NNNN>-view<VV>.png for several camera views),
    or one <outdir>/grid.png with --grid. Camera options apply to camera-conditioned networks (25-float
    labels); yaw and pitch follow EG3D's convention on a sphere about the world origin. The view options
    apply to the networks that declare them: --scale to any-scale generators, --size, --zoom and
    --translate to coordinate-based ones (CREPS), --translate and --rotate to StyleGAN3, --resolution to
    volume renderers that render any size (EpiGRAF). Numbers must be
    finite (nan and inf are refused).
    """
    opts = dnnlib.EasyDict(kwargs)
    generate_images(opts)


if __name__ == '__main__':
    main()
