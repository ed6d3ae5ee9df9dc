"""Render a looping latent-interpolation video from a network pickle (mp4 via imageio-ffmpeg).

    # A 2x2 grid of interpolations through 8 keyframes each (32 seeds).
    python gen_video.py --network=snapshot.pkl --seeds=0-31 --grid=2x2 --output=lerp.mp4

    # A camera-conditioned network: the camera orbits (EG3D's path) while W moves through the seeds.
    python gen_video.py --network=snapshot.pkl --seeds=0-3 --output=orbit.mp4
    # ... or a pure orbit around one identity.
    python gen_video.py --network=snapshot.pkl --seeds=0 --w-frames=120 --output=orbit.mp4

    # EG3D: an orbit around one identity, and its depth (twice the depth samples by default, as EG3D).
    python gen_video.py --network=ffhq512-128.pkl --seeds=0 --w-frames=120 --trunc=0.7 --output=orbit.mp4
    python gen_video.py --network=ffhq512-128.pkl --seeds=0 --w-frames=120 --image-mode=image_depth --output=depth.mp4

    # EpiGRAF: its front_circle path (a fly-around with zoom, 64 frames) at 256 x 256, with twice the
    # samples per ray it was trained with (the default here, as EpiGRAF's scripts).
    python gen_video.py --network=epigraf.pkl --seeds=0 --camera=front_circle --resolution=256 --output=circle.mp4

    # An any-scale generator (CREPS) at twice its resolution; or a 16:9 view of it, magnified 1.5 times.
    python gen_video.py --network=creps.pkl --seeds=0-7 --scale=2 --output=lerp.mp4
    python gen_video.py --network=creps.pkl --seeds=0-7 --size=1280x720 --zoom=1.5 --output=wide.mp4
"""

import os
import sys

import click
import imageio
import numpy as np
import torch
import tqdm

import dnnlib
from dnnlib import cli
from dnnlib import signals
from training import cameras, capabilities, generation


class CommandError(click.ClickException):
    """One sentence on stderr, exit code 1, no traceback."""


def parse_grid(text):
    try:
        return dnnlib.util.parse_grid_size(text)
    except ValueError:
        raise CommandError(f'--grid={text} is not COLSxROWS, e.g. --grid=2x2.') from None


def keyframe_seeds(seeds, num_keyframes, cells, shuffle_seed):
    """[cells, num_keyframes] seeds, cycling through `seeds` as NVIDIA's gen_video does (optionally shuffled)."""
    if num_keyframes is None:
        if len(seeds) % cells != 0:
            raise CommandError(f'{len(seeds)} seeds cannot be split evenly over a grid of {cells} videos; pass a '
                               f'multiple of {cells} seeds or --num-keyframes.')
        num_keyframes = len(seeds) // cells
    if num_keyframes * cells > dnnlib.util.MAX_RANGE_LENGTH:
        raise CommandError(f'{num_keyframes} keyframes for each of {cells} videos are {num_keyframes * cells} latents, more '
                           f'than the {dnnlib.util.MAX_RANGE_LENGTH} allowed; pass a smaller --num-keyframes or --grid.')
    all_seeds = np.array([seeds[i % len(seeds)] for i in range(num_keyframes * cells)])
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(all_seeds)
    return all_seeds.reshape(cells, num_keyframes)


def label_function(G, opts, num_frames):
    """frame -> [1, c_dim] label: the orbiting (or fixed) camera, a class, or nothing."""
    camera_options = [name for name in ('yaw', 'pitch', 'yaw_range', 'pitch_range', 'radius', 'fov', 'focal', 'pivot')
                      if opts[name] is not None]
    camera_net = capabilities.label_kind(G) == 'camera'
    if camera_net and opts.class_idx is not None:
        raise CommandError(f'--class={opts.class_idx} is a class, but this network is camera-conditioned; it takes camera '
                           f'options (--camera, --yaw, --pitch, ...), not --class.')
    if not camera_net:
        if camera_options:
            raise CommandError(f'--{camera_options[0].replace("_", "-")} sets the camera, but this network has no '
                               f'camera input (c_dim={G.c_dim}); drop the camera options.')
        if G.c_dim == 0 and opts.class_idx is not None:
            print('warning: --class is ignored for an unconditional network', file=sys.stderr)
            return lambda frame: torch.zeros([1, 0])
        try:
            label = generation.class_label(G, opts.class_idx)
        except generation.GenerationError as error:
            raise CommandError(str(error)) from None
        return lambda frame: label
    if opts.fov is not None and opts.focal is not None:
        raise CommandError('Pass either --fov or --focal, not both.')
    default_radius, default_pivot = generation.camera_defaults(G)
    pivot = opts.pivot if opts.pivot is not None else default_pivot
    camera = dict(radius=opts.radius or default_radius, pivot=pivot,
                  focal=cameras.fov_to_focal(opts.fov) if opts.fov is not None else (opts.focal or generation.camera_focal(G)))
    yaw0, pitch0 = opts.yaw or 0.0, opts.pitch or 0.0
    if opts.camera == 'front_circle':
        fov = cameras.gram_fov(camera['focal'])  # the zoom is in the field of view across the image side
        yaw_range = 0.3 if opts.yaw_range is None else opts.yaw_range
        pitch_range = 0.2 if opts.pitch_range is None else opts.pitch_range
        if not 1.0 < fov < 179.0:
            raise CommandError(f'--camera=front_circle zooms the field of view by +-1 degree, but the camera\'s is '
                               f'{fov:.3g} degrees across the image; pass another --fov or --focal.')

        def front_circle(frame):
            return cameras.front_circle_labels([frame / num_frames], fov, radius=camera['radius'], pivot=camera['pivot'],
                                               yaw_amplitude=yaw_range, pitch_amplitude=pitch_range, yaw=yaw0,
                                               pitch=pitch0)
        return front_circle
    if opts.camera == 'fixed':
        label = cameras.lookat_labels([yaw0], [pitch0], **camera)
        return lambda frame: label
    yaw_range = 0.35 if opts.yaw_range is None else opts.yaw_range
    pitch_range = 0.25 if opts.pitch_range is None else opts.pitch_range

    def orbit(frame):
        yaw, pitch = cameras.orbit_angles(frame / num_frames, yaw_amplitude=yaw_range, pitch_amplitude=pitch_range,
                                          pitch_offset=-0.05 + pitch0)
        return cameras.lookat_labels([yaw + yaw0], [pitch], **camera)
    return orbit


def frame_view(G, opts, grid):
    """(synthesis keywords, (height, width) of one cell) of the view options, checked before any frame is rendered."""
    try:
        view, (height, width) = generation.prepare_view(G, scale=opts.scale, size=opts.size, translate=opts.translate,
                                                        zoom=opts.zoom, resolution=opts.resolution)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    channels = getattr(G, 'img_channels', 3)
    if opts.scale is not None:
        side = generation.scaled_side(G, opts.scale)
        cli.check_image_size(side, side, channels, '--scale')
    if opts.size is not None:
        cli.check_image_size(width, height, channels, '--size')
    if opts.resolution is not None:
        cli.check_image_size(width, height, channels, '--resolution')
    frame_width, frame_height = grid[0] * width, grid[1] * height
    cli.check_image_size(frame_width, frame_height, channels, '--grid')
    chosen = opts.size is not None or opts.scale is not None or opts.resolution is not None
    odd = chosen and (frame_width % 2 or frame_height % 2)
    if odd:  # An odd native resolution is left to imageio (it resizes it to even sides); a chosen one must fit H.264.
        if opts.resolution is not None:
            raise CommandError(f'--resolution={opts.resolution} gives {frame_width}x{frame_height} frames, but an H.264 '
                               f'video needs an even width and height; pass an even --resolution.')
        if opts.size is not None:
            raise CommandError(f'--size={width}x{height} gives {frame_width}x{frame_height} frames, but an H.264 video '
                               f'needs an even width and height; pass an even --size.')
        side = generation.scaled_side(G, opts.scale)
        raise CommandError(f'--scale={opts.scale:.10g} gives {frame_width}x{frame_height} frames ({side} pixels per cell), but an '
                           f'H.264 video needs an even width and height; pass e.g. '
                           f'--scale={generation.scale_for_side(G.img_resolution, side + 1)}.')
    return view


def claim_output(path, overwrite):
    if not path.lower().endswith('.mp4'):
        raise CommandError(f'--output={path} must end in .mp4.')
    cli.check_output_path(path, '--output', 'file')
    if os.path.exists(path) and not overwrite:
        raise CommandError(f'{path} already exists; pass --overwrite to replace it or choose another --output.')
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise CommandError(f'Cannot create the folder of --output={path} ({error.strerror}).') from None


def write_video(path, frames, num_frames, fps, bitrate):
    """Encode frames into `path` through a temporary file, so an interrupted run leaves no half video."""
    folder, name = os.path.split(os.path.abspath(path))
    tmp_path = os.path.join(folder, f'.{os.path.splitext(name)[0]}.partial-{os.getpid()}.mp4')
    interactive = sys.stderr.isatty()
    try:
        # macro_block_size=2: keep the exact frame size (even sizes are all libx264 needs for yuv420p).
        with imageio.get_writer(tmp_path, mode='I', fps=fps, codec='libx264', bitrate=bitrate,
                                macro_block_size=2) as writer:
            for index, frame in enumerate(tqdm.tqdm(frames, total=num_frames, unit='frame', disable=not interactive)):
                writer.append_data(frame.numpy())
                if not interactive and (index + 1) % max(1, num_frames // 10) == 0:
                    print(f'{index + 1}/{num_frames} frames', file=sys.stderr)
        os.replace(tmp_path, path)
    finally:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)


@click.command(context_settings=dict(help_option_names=['-h', '--help']))
@click.option('--network', help='Network pickle: path or URL', required=True, metavar='PATH|URL')
@click.option('--seeds', help=f'Keyframe seeds, e.g. 0-31 (at most {dnnlib.util.MAX_RANGE_LENGTH})', required=True, metavar='LIST')
@click.option('--shuffle-seed', help='Shuffle the keyframe seeds with this seed', type=int, metavar='INT')
@click.option('--grid', help='Videos per row x rows', default='1x1', show_default=True, metavar='COLSxROWS')
@click.option('--num-keyframes', help='Keyframes per video  [default: seeds / grid cells]', type=click.IntRange(min=1), metavar='INT')
@click.option('--w-frames', help='Frames between two keyframes  [default: 120; 64 with --camera=front_circle, as EpiGRAF]', type=click.IntRange(min=1), metavar='INT')
@click.option('--trunc', help='Truncation psi', type=cli.FiniteFloat(), default=1, show_default=True)
@click.option('--trunc-cutoff', help='Truncate only the first N ws', type=click.IntRange(min=0), metavar='N')
@click.option('--class', 'class_idx', help='Class label (class-conditional networks)', type=int, metavar='INT')
@click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']), default='const', show_default=True)
@click.option('--camera', help='Camera path of camera-conditioned networks, one loop per video: EG3D\'s orbit, EpiGRAF\'s front_circle (yaw 0.3 sin, pitch 0.2 cos and the field of view +-1 degree about its own, sin), or fixed at --yaw/--pitch', type=click.Choice(['orbit', 'front_circle', 'fixed']), default='orbit', show_default=True)
@click.option('--yaw', help='Yaw in radians from the frontal pose (centre of the orbit)  [default: 0]', type=cli.FiniteFloat())
@click.option('--pitch', help='Pitch in radians from the frontal pose (added to the orbit)  [default: 0]', type=cli.FiniteFloat())
@click.option('--yaw-range', help='Orbit amplitude in yaw, radians  [default: 0.35; front_circle 0.3]', type=cli.FiniteFloat(min=0))
@click.option('--pitch-range', help='Orbit amplitude in pitch, radians  [default: 0.25; front_circle 0.2]', type=cli.FiniteFloat(min=0))
@click.option('--radius', help=f'Camera distance from the world origin  [default: {cameras.FFHQ_RADIUS}]', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--fov', help='Diagonal field of view in degrees (instead of --focal)', type=cli.FiniteFloat(0, 180, min_open=True, max_open=True))
@click.option('--focal', help=f'Focal length normalised by the image size  [default: the network\'s own, else {cameras.FFHQ_FOCAL}]', type=cli.FiniteFloat(min=0, min_open=True))
@click.option('--pivot', help='Point the camera looks at  [default: 0,0,0.2]', metavar='X,Y,Z', type=cli.FiniteFloatList(count=3))
@click.option('--scale', help=f'Output scale, for generators that render at any resolution: int(resolution * S) pixels per side (at most {cli.MAX_IMAGE_SIDE})', type=cli.FiniteFloat(min=0, min_open=True), metavar='S')
@click.option('--size', help='Width x height in pixels of each video (grid cell) at the pixel pitch of --scale, for networks that render any shape (CREPS); the frame must have even sides', metavar='WxH', type=cli.ViewSize())
@click.option('--translate', help='Move the content by X,Y image sizes (+x right, +y down): StyleGAN3 (input transform) or networks with a view (CREPS)', default='0,0', show_default=True, metavar='X,Y', type=cli.FiniteFloatList(count=2))
@click.option('--zoom', help='Magnify the content about the image centre, for networks with a view (CREPS)  [default: 1]', type=cli.FiniteFloat(min=0, min_open=True), metavar='Z')
@click.option('--resolution', help=f'Render R x R frames, for volume renderers that render any resolution (EpiGRAF; at most {cli.MAX_IMAGE_SIDE})', type=click.IntRange(min=1), metavar='R')
@click.option('--image-mode', help='Which output of a network with several (EG3D: image, image_raw, image_depth; depth colour-mapped)', type=click.Choice(['image', 'image_raw', 'image_depth']), default='image', show_default=True)
@click.option('--nrr', help='Neural rendering resolution of a volume renderer (EG3D)  [default: the network\'s]', type=click.IntRange(min=4, max=1024), metavar='INT')
@click.option('--sample-mult', '--ray-step-multiplier', 'sample_mult', help='Multiply the samples per ray of a volume renderer (EG3D, EpiGRAF; 1: as trained)  [default: 2, as EG3D\'s gen_videos.py and EpiGRAF\'s scripts]', type=cli.FiniteFloat(min=0, min_open=True), metavar='M')
@click.option('--fps', help='Frames per second', type=click.IntRange(min=1), default=60, show_default=True)
@click.option('--bitrate', help='Video bitrate in bits per second, with an optional k, M or G suffix (1k to 10G)', type=cli.Bitrate(), default='12M', show_default=True)
@click.option('--batch', help='Images per forward pass', type=click.IntRange(min=1), default=8, show_default=True)
@click.option('--device', help='Where to run  [default: cuda if available, else cpu]', type=click.Choice(['cuda', 'cpu']))
@click.option('--trust-code', help='Execute code embedded in the pickle (only for files you trust)', is_flag=True)
@click.option('--overwrite', help='Replace --output if it exists', is_flag=True)
@click.option('--output', help='Output .mp4 file', required=True, metavar='FILE')
@signals.exit_on_interrupt
def main(**kwargs):
    """Render a looping video that interpolates in W between keyframe seeds.

    Each grid cell loops through its keyframes (num_keyframes * w_frames frames in all, cubic spline in
    W). For camera-conditioned networks the camera follows EG3D's orbit (yaw +-0.35, pitch -0.05 +- 0.25
    radians around the frontal pose, one loop per video), EpiGRAF's fly-around with zoom with
    --camera=front_circle (64 frames by default), or stays fixed with --camera=fixed. --resolution
    applies to volume renderers that render any size (EpiGRAF), --scale
    applies to any-scale generators, --size, --zoom and --translate to coordinate-based ones (CREPS),
    --translate to StyleGAN3 too. Numbers must be finite (nan and inf are refused).
    """
    opts = dnnlib.EasyDict(kwargs)
    if opts.w_frames is None:
        opts.w_frames = 64 if opts.camera == 'front_circle' else 120
    try:
        seeds = generation.parse_seeds(opts.seeds)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    grid = parse_grid(opts.grid)
    seed_table = keyframe_seeds(seeds, opts.num_keyframes, grid[0] * grid[1], opts.shuffle_seed)
    claim_output(opts.output, opts.overwrite)
    try:
        device = generation.choose_device(opts.device)
        G = generation.load_generator(opts.network, device, trust_code=opts.trust_code)
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    view = frame_view(G, opts, grid)
    try:
        generation.check_image_mode(G, opts.image_mode)
        sample_mult = opts.sample_mult
        if sample_mult is None and (capabilities.accepts(G, 'render') or capabilities.accepts(G, 'ray_step_multiplier')):
            sample_mult = 2  # EG3D's gen_videos.py and EpiGRAF's default: fewer flickering samples
        view = {**view, **(generation.set_render_options(G, nrr=opts.nrr, sample_mult=sample_mult) or {})}
    except generation.GenerationError as error:
        raise CommandError(str(error)) from None
    num_frames = seed_table.shape[1] * opts.w_frames
    label_at = label_function(G, opts, num_frames)

    z = torch.stack([generation.latents(row, G.z_dim, device) for row in seed_table])
    frames = generation.interpolation_frames(G, z, num_frames, opts.w_frames, label_at, grid,
                                             truncation_psi=opts.trunc, truncation_cutoff=opts.trunc_cutoff,
                                             noise_mode=opts.noise_mode, batch=opts.batch, view=view,
                                             image_mode=opts.image_mode, mapping_c=generation.mapping_label(G, device))
    write_video(opts.output, frames, num_frames, opts.fps, opts.bitrate)
    print(f'Wrote {opts.output} ({num_frames} frames)')


if __name__ == '__main__':
    main()
