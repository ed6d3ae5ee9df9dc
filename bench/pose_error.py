"""Pose error: does a camera-conditioned generator show the camera it is asked for?

A small CNN learns (yaw, pitch) from real images with exact poses (the synthetic shapes renderer,
or a camera-labelled dataset zip), then reads the pose of generated images made at requested
cameras. The mean absolute difference between requested and regressed angles, in degrees, is the
pose error. Every number is printed next to references from the same run:

- `regressor_heldout`: the regressor on held-out real images, the floor any generator can reach;
- `mean_pose`: always answering the mean training pose, about what a generator that ignores the
  camera scores (its images all look like one pose);
- `renderer`: the synthetic renderer itself at the requested cameras, a perfect generator (should
  sit near the floor; meaningful when the data are synthetic shapes);
- `trained`: the network's G_ema; `untrained`: the same architecture with fresh random weights.

Angles are EG3D's yaw and pitch *relative to the frontal pose* in radians (`cameras.lookat_labels`):
positive yaw moves the camera towards world +x, positive pitch moves it down. They are read from a
label's camera centre in closed form (`pose_from_labels`), so they do not depend on the look-at
point. Each record also has the Pearson correlation between requested and regressed angles
(`*_corr`): near 1 when the images follow the camera, near 0 when they ignore it.

An angle is only measurable if single images reveal it; `regressor_heldout` says whether it does
(`yaw_informative` / `pitch_informative`: held-out error below 3/4 of the mean-pose error on the
same images). In synthetic shapes pitch shows through the horizon and yaw through the sky's glow
towards world -x (`synthetic_shapes.GLOW_COLOR`); before the glow existed the scenes, which have no
front, did not reveal yaw (held-out 13.6 deg against 13.7 for the mean pose at 32x32).

The untrained generator's images are far from the data and can push the regressor to extreme
answers, so its error may exceed the mean pose's; the correlations tell "ignores the camera"
(about 0) from "follows it" (near the renderer's) more directly.

Images are compared as saved PNGs would be (quantised to uint8), resized to the regressor's
resolution when they differ. The regressor is trained on the CPU whatever `--device` is (about
20 s for 4096 images at 32x32 on 2 cores); `--cache-regressor` keeps it for later runs. It learns
from mirrored images too (yaw negated) with `--mirror`, only right for a left-right symmetric world
(not synthetic shapes, whose glow is on one side). Everything is seeded and the regressor trains in a fixed order, so reruns on one
machine and thread count give the same numbers.

    python bench/pose_error.py --network=run/network-snapshot-000200.pkl
    python bench/pose_error.py --network=PKL --data=datasets/shapes-32.zip --cache-regressor=/tmp/pose32.pt
"""

import argparse
import json
import math
import os
import sys
import time

# Passive OpenMP waiting: with busy-waiting threads, training slowed down ~10x on a shared 2-core
# machine; results do not change. Only effective before torch is first imported.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from dnnlib import signals  # noqa: E402
from training import cameras, capabilities, generation, snapshots, synthetic_shapes  # noqa: E402
from training import dataset as dataset_module  # noqa: E402

SYNTHETIC = 'synthetic:shapes'
REGRESSOR_VERSION = 2  # 2: synthetic shapes gained the sky glow (a yaw cue); no mirroring by default
INFORMATIVE_RATIO = 0.75  # an angle is measurable when the floor is below this fraction of the mean-pose error
MIN_DATASET_IMAGES = 64


class PoseBenchError(ValueError):
    """A bad input; the message is one sentence naming it and the fix."""

# ----------------------------------------------------------------------------------------------
# Poses.


def pose_from_labels(c):
    """[N, 2] (yaw, pitch) in radians relative to the frontal pose, from [N, 25] camera labels.

    Inverts EG3D's sphere parameterisation (`cameras.lookat_labels`) on the camera centre o:
    o = r (sin phi sin yaw, cos phi, sin phi cos yaw) with cos phi = -2 pitch / pi.
    """
    c = torch.as_tensor(c, dtype=torch.float64)
    origin = cameras.unpack(c)[0][:, :3, 3]
    x, y, z = origin.unbind(dim=1)
    yaw = torch.atan2(x, z)
    pitch = -math.pi / 2 * y / origin.norm(dim=1)
    return torch.stack([yaw, pitch], dim=1).float()


def labels_from_pose(yaw, pitch, radius=synthetic_shapes.CAMERA_RADIUS, focal=synthetic_shapes.FOCAL):
    """[N, 25] labels of cameras at (yaw, pitch) relative to frontal, looking at the origin as synthetic shapes' do."""
    yaw = torch.as_tensor(yaw, dtype=torch.float32).reshape(-1)
    pitch = torch.as_tensor(pitch, dtype=torch.float32).reshape(-1)
    cos_phi = -2 * pitch / math.pi
    sin_phi = (1 - cos_phi ** 2).clamp(min=0).sqrt()
    origins = radius * torch.stack([sin_phi * yaw.sin(), cos_phi, sin_phi * yaw.cos()], dim=1)
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    return cameras.pack(cameras.create_cam2world_matrix(-origins, origins), intrinsics)


def pose_grid(num_yaw=5, num_pitch=3, yaw_range=2 * synthetic_shapes.YAW_STDDEV,
              pitch_range=2 * synthetic_shapes.PITCH_STDDEV):
    """[num_yaw * num_pitch, 25] labels on a yaw x pitch grid within +-range of frontal (synthetic shapes' camera)."""
    yaw, pitch = torch.meshgrid(torch.linspace(-yaw_range, yaw_range, num_yaw),
                                torch.linspace(-pitch_range, pitch_range, num_pitch), indexing='xy')
    return labels_from_pose(yaw.reshape(-1), pitch.reshape(-1))

# ----------------------------------------------------------------------------------------------
# Real images with exact poses.


class PoseSource:
    """Real images and their camera labels: the synthetic renderer (`data=None`) or a camera-labelled dataset."""

    def __init__(self, data=None, resolution=32):
        self.data = data
        self.dataset = None
        if data is None:
            self.name, self.resolution = SYNTHETIC, int(resolution)
            return
        try:
            self.dataset = dataset_module.ImageFolderDataset(data, use_labels=True)
        except dataset_module.DatasetError as error:
            raise PoseBenchError(str(error)) from None
        problem = self.dataset.camera_label_problem  # 25-float labels that are not cameras: why
        if problem:
            raise PoseBenchError(f'--data={data} needs camera labels, but {problem[:1].lower() + problem[1:]}; fix its '
                                 f'dataset.json.')
        if not self.dataset.has_camera_labels:
            raise PoseBenchError(f'--data={data} has no 25-float camera labels in its dataset.json; pass a camera-'
                                 f'labelled dataset (dataset_tool.py --source=synthetic:shapes makes one).')
        if self.dataset.num_channels != 3 or len(self.dataset) < MIN_DATASET_IMAGES:
            raise PoseBenchError(f'--data={data} must hold at least {MIN_DATASET_IMAGES} RGB images, it has '
                                 f'{len(self.dataset)} with {self.dataset.num_channels} channels.')
        self.name, self.resolution = os.path.abspath(data), self.dataset.resolution

    def fingerprint(self):
        """What identifies the source's images for the regressor cache."""
        if self.dataset is None:
            return dict(source=SYNTHETIC, resolution=self.resolution)
        stat = os.stat(self.data)
        return dict(source=self.name, resolution=self.resolution, size=stat.st_size, mtime=stat.st_mtime_ns)

    def split(self, num_train, num_heldout, seed):
        """((train images, labels), (held-out images, labels)): disjoint, float images in [-1, 1] [N, 3, H, W].

        The held-out set depends on `num_heldout` and `seed` only, so a cached regressor is scored on
        the same images as a fresh one (`num_train` = 0 loads no training images).
        """
        if self.dataset is None:
            train = render_real(num_train, self.resolution, seed=2 * seed)
            return train, render_real(num_heldout, self.resolution, seed=2 * seed + 1)
        count = len(self.dataset)
        num_heldout = min(num_heldout, max(count // 8, 1))
        num_train = min(num_train, count - num_heldout)
        order = np.random.RandomState(seed).permutation(count)
        return self._load(order[num_heldout:num_heldout + num_train]), self._load(order[:num_heldout])

    def labels(self, num, seed):
        """[num, 25] requested cameras drawn from the source's pose distribution."""
        if self.dataset is None:
            generator = torch.Generator().manual_seed(seed)
            cam2world, intrinsics = synthetic_shapes.random_cameras(num, generator)
            return cameras.pack(cam2world, intrinsics)
        index = np.random.RandomState(seed).randint(len(self.dataset), size=num)
        return torch.from_numpy(np.stack([self.dataset.get_label(int(i)) for i in index])).float()

    def _load(self, indices):
        res = self.resolution
        images = np.zeros([len(indices), 3, res, res], dtype=np.uint8)
        labels = np.zeros([len(indices), cameras.LABEL_DIM], dtype=np.float32)
        for row, index in enumerate(indices):
            images[row], labels[row] = self.dataset[int(index)]
        return torch.from_numpy(images).float() / 127.5 - 1, torch.from_numpy(labels)


def render_real(num, resolution, seed, batch=256):
    """`num` random synthetic scenes from random cameras: (images [-1, 1] as saved PNGs, labels)."""
    generator = torch.Generator().manual_seed(seed)
    scenes = synthetic_shapes.random_scenes(num, generator)
    cam2world, intrinsics = synthetic_shapes.random_cameras(num, generator)
    labels = cameras.pack(cam2world, intrinsics)
    return render_scenes(scenes, labels, resolution, batch), labels


def render_scenes(scenes, labels, resolution, batch=256):
    """Scenes drawn at labels `labels` as `render_dataset` draws them (2x2 supersampling, uint8 quantisation)."""
    cam2world, intrinsics = cameras.unpack(labels)
    images = [torch.zeros([0, 3, resolution, resolution])]
    with torch.no_grad():
        for start in range(0, len(labels), batch):
            part = slice(start, start + batch)
            rgb = synthetic_shapes.render(scenes.select(part), cam2world[part], intrinsics[part], resolution,
                                          resolution, supersample=2)
            images.append((rgb * 255).round().clamp(0, 255) / 127.5 - 1)
    return torch.cat(images)

# ----------------------------------------------------------------------------------------------
# The regressor.


class PoseRegressor(torch.nn.Module):
    """Images [N, 3, H, W] in [-1, 1] -> [N, 2] (yaw, pitch) in radians.

    Strided convolutions down to 4x4, then a linear layer over the flattened map: the position of
    what it sees (the horizon) carries the pose, so there is no global pooling. Inputs of another
    size are resized to `resolution` first.
    """

    def __init__(self, resolution=32, channels=(32, 32, 64), convs_per_stage=1):
        super().__init__()
        self.resolution = int(resolution)
        self.channels = tuple(channels)
        self.convs_per_stage = int(convs_per_stage)
        layers, in_channels = [], 3
        for out_channels in self.channels:
            for index in range(self.convs_per_stage):
                stride = 2 if index == self.convs_per_stage - 1 else 1
                layers += [torch.nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
                           torch.nn.BatchNorm2d(out_channels), torch.nn.ReLU()]
                in_channels = out_channels
        self.features = torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten())
        self.head = torch.nn.Linear(in_channels * 16, 2)
        self.register_buffer('pose_mean', torch.zeros([2]))
        self.register_buffer('pose_scale', torch.ones([2]))

    def forward(self, images):
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            shrink = images.shape[-1] > self.resolution
            images = F.interpolate(images, size=(self.resolution, self.resolution),
                                   mode='area' if shrink else 'bilinear', align_corners=None if shrink else False)
        return self.head(self.features(images)) * self.pose_scale + self.pose_mean

    @torch.no_grad()
    def predict(self, images, batch=256):
        self.eval()
        return torch.cat([self(part) for part in images.split(batch)])


def train_pose_regressor(images, poses, epochs=12, batch=64, lr=3e-3, seed=0, channels=(32, 32, 64), convs_per_stage=1,
                         mirror=False, log=None):
    """A PoseRegressor fitted to images [N, 3, H, W] in [-1, 1] and poses [N, 2] (yaw, pitch) in radians.

    Adam with a one-cycle learning rate, smooth L1 on poses standardised by the training mean and
    spread; seeded, in a fixed order. `mirror` flips half of each batch horizontally and negates
    its yaw (a mirrored scene seen from the mirrored camera, `cameras.flip_yaw`), which assumes a
    left-right symmetric pose and scene distribution, as synthetic shapes and faces have.
    """
    torch.manual_seed(seed)
    regressor = PoseRegressor(images.shape[-1], channels, convs_per_stage)
    regressor.pose_mean.copy_(poses.mean(dim=0))
    regressor.pose_scale.copy_(poses.std(dim=0).clamp(min=1e-3))
    mirrored = poses * torch.tensor([-1.0, 1.0])
    steps_per_epoch = max(len(images) // batch, 1)
    optimizer = torch.optim.Adam(regressor.parameters(), lr=lr / 10)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    regressor.train()
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch:(step + 1) * batch]
            flip = (torch.rand([len(index)], generator=generator) < 0.5) & mirror
            x = torch.where(flip.reshape(-1, 1, 1, 1), images[index].flip(-1), images[index])
            target = torch.where(flip.reshape(-1, 1), mirrored[index], poses[index])
            predicted = regressor.head(regressor.features(x))
            loss = F.smooth_l1_loss(predicted, (target - regressor.pose_mean) / regressor.pose_scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item()
        if log is not None:
            log(f'regressor epoch {epoch + 1}/{epochs}: loss {total / steps_per_epoch:.4f}')
    return regressor.eval().requires_grad_(False)


def save_regressor(regressor, path, key):
    data = dict(key=key, resolution=regressor.resolution, channels=list(regressor.channels),
                convs_per_stage=regressor.convs_per_stage, state=regressor.state_dict())
    snapshots.atomic_write(path, lambda f: torch.save(data, f))  # no partial file, even on Ctrl-C or SIGTERM


def load_regressor(path, key):
    """The cached regressor at `path` if it was trained for `key`, else None."""
    try:
        saved = torch.load(path, map_location='cpu', weights_only=True)
    except Exception:  # an unreadable or foreign cache is retrained and overwritten  # noqa: BLE001
        return None
    if not isinstance(saved, dict) or saved.get('key') != key:
        return None
    regressor = PoseRegressor(saved['resolution'], saved['channels'], saved['convs_per_stage'])
    regressor.load_state_dict(saved['state'])
    return regressor.eval().requires_grad_(False)

# ----------------------------------------------------------------------------------------------
# Scoring.


def pose_errors(requested, regressed):
    """Mean absolute yaw and pitch errors in degrees and Pearson correlations, for [N, 2] angle tensors in radians."""
    requested, regressed = requested.double(), regressed.double()
    error = (regressed - requested).abs().mean(dim=0) * 180 / math.pi

    def corr(a, b):
        a, b = a - a.mean(), b - b.mean()
        denominator = (a.norm() * b.norm()).item()
        return (a @ b).item() / denominator if denominator > 0 else 0.0

    return dict(yaw_deg=_round(error[0].item()), pitch_deg=_round(error[1].item()),
                yaw_corr=_round(corr(requested[:, 0], regressed[:, 0])),
                pitch_corr=_round(corr(requested[:, 1], regressed[:, 1])))


def measure_images(regressor, images, labels):
    """Pose errors of images [N, 3, H, W] in [-1, 1] that should show cameras `labels` [N, 25]."""
    return dict(pose_errors(pose_from_labels(labels), regressor.predict(images.float().cpu())), num=len(labels))


@torch.no_grad()
def generator_images(G, labels, seed=0, truncation_psi=1, batch=16, device='cpu'):
    """G's images at cameras `labels` for latents of seeds seed, seed + 1, ... (quantised like saved PNGs)."""
    z = generation.latents(range(seed, seed + len(labels)), G.z_dim, device)
    images = []
    for z_part, c_part in zip(z.split(batch), labels.to(device).split(batch)):
        ws = G.mapping(z_part, c_part, truncation_psi=truncation_psi)
        images.append(generation.synthesize(G, ws, c=c_part, noise_mode='const').float().cpu())
    images = torch.cat(images)
    if images.shape[1] != 3:
        raise PoseBenchError(f'The generator makes {images.shape[1]}-channel images; the pose regressor reads RGB.')
    return generation.to_uint8(images).permute(0, 3, 1, 2).float() / 127.5 - 1


def measure(G, regressor, labels, seed=0, truncation_psi=1, batch=16, device='cpu'):
    """Pose errors of generator G asked for cameras `labels` [N, 25]: mean |requested - regressed| in degrees."""
    return measure_images(regressor, generator_images(G, labels, seed, truncation_psi, batch, device), labels)


def measure_renderer(regressor, labels, resolution, seed=0):
    """Pose errors of the synthetic renderer (random scenes) at cameras `labels`: a perfect generator."""
    scenes = synthetic_shapes.random_scenes(len(labels), torch.Generator().manual_seed(seed))
    return measure_images(regressor, render_scenes(scenes, labels, resolution), labels)


def measure_mean_pose(regressor, labels):
    """Pose errors of always answering the regressor's mean training pose."""
    constant = regressor.pose_mean.expand(len(labels), 2)
    return dict(pose_errors(pose_from_labels(labels), constant), num=len(labels))


def untrained_copy(G, seed=0):
    """G's architecture rebuilt from its recorded constructor arguments, with fresh random weights."""
    if not hasattr(G, 'init_kwargs'):
        raise PoseBenchError(f'{type(G).__name__} does not record its constructor arguments, so no untrained copy '
                             f'can be built; pass --no-untrained.')
    torch.manual_seed(0x5EED + seed)  # not the seed a small test network was probably built with
    rebuilt = type(G)(*getattr(G, 'init_args', ()), **G.init_kwargs)
    for name in capabilities.state_attributes(G):  # plain state, e.g. EG3D's neural rendering resolution
        setattr(rebuilt, name, getattr(G, name))
    device = next(iter(G.parameters()), torch.empty(0)).device
    return rebuilt.to(device).eval().requires_grad_(False)


def fit_regressor(source, num_images, seed=0, cache=None, mirror=False, log=None):
    """(regressor, held-out record, seconds spent, cached?) for a PoseSource, reusing `cache` when it matches.

    The held-out set has num_images / 8 images (at least 64); the record adds the mean-pose error on
    them and whether each angle is measurable at all (`*_informative`).
    """
    num_heldout = max(num_images // 8, 64)
    key = dict(source.fingerprint(), num_images=num_images, seed=seed, mirror=mirror, version=REGRESSOR_VERSION)
    start = time.perf_counter()
    regressor = load_regressor(cache, key) if cache and os.path.isfile(cache) else None
    (train_images, train_labels), (heldout_images, heldout_labels) = (
        source.split(0 if regressor else num_images, num_heldout, seed))
    cached = regressor is not None
    if regressor is None:
        regressor = train_pose_regressor(train_images, pose_from_labels(train_labels), seed=seed, mirror=mirror,
                                         log=log)
        if cache:
            try:
                save_regressor(regressor, cache, key)
            except (OSError, RuntimeError) as error:  # torch.save reports some file errors as RuntimeError
                raise PoseBenchError(f'Cannot write --cache-regressor={cache} ({error}); pass a path in a writable '
                                     f'folder.') from None
    heldout = measure_images(regressor, heldout_images, heldout_labels)
    mean_pose = measure_mean_pose(regressor, heldout_labels)
    for angle in ('yaw', 'pitch'):
        heldout[f'{angle}_mean_pose_deg'] = mean_pose[f'{angle}_deg']
        heldout[f'{angle}_informative'] = heldout[f'{angle}_deg'] < INFORMATIVE_RATIO * mean_pose[f'{angle}_deg']
    return regressor, heldout, time.perf_counter() - start, cached


def _round(value):
    return float(f'{value:.4g}')

# ----------------------------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f'Error: {message}.\n')


def parse_args(argv=None):
    parser = _Parser(description=__doc__.splitlines()[0])
    parser.add_argument('--network', required=True, help='pickle (path or URL) of a camera-conditioned generator')
    parser.add_argument('--data', default=None, help='camera-labelled dataset zip or folder (default: synthetic)')
    parser.add_argument('--resolution', type=int, default=None,
                        help='resolution of the synthetic images (default: the network\'s output resolution)')
    parser.add_argument('--num', type=int, default=256, help='generated images per subject')
    parser.add_argument('--poses', choices=['data', 'grid'], default='data',
                        help='requested cameras: drawn from the data\'s poses, or a 7x5 yaw x pitch grid within 2 '
                             'standard deviations of frontal (synthetic shapes\' camera), repeated to --num')
    parser.add_argument('--seed', type=int, default=0, help='seed of latents, cameras, scenes and the regressor')
    parser.add_argument('--device', default=None, help='cuda or cpu (default: CUDA when available)')
    parser.add_argument('--regressor-images', type=int, default=4096, help='real images the regressor learns from')
    parser.add_argument('--cache-regressor', default=None, metavar='PATH', help='reuse / store the trained regressor')
    parser.add_argument('--trunc', type=float, default=1.0, help='truncation psi of the generated images')
    parser.add_argument('--mirror', action='store_true',
                        help='also train on mirrored images, yaw negated (only for mirror-symmetric worlds)')
    parser.add_argument('--no-untrained', action='store_true', help='skip the untrained-generator baseline')
    parser.add_argument('--no-renderer', action='store_true', help='skip the synthetic renderer reference')
    parser.add_argument('--trust-code', action='store_true', help='allow the pickle to run its embedded source code')
    parser.add_argument('--verbose', action='store_true', help='log regressor training to stderr')
    args = parser.parse_args(argv)
    for name in ('num', 'regressor_images'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be a positive integer')
    if args.regressor_images < 64:
        parser.error('--regressor-images must be at least 64')
    if args.resolution is not None and not 8 <= args.resolution <= 1024:
        parser.error('--resolution must be between 8 and 1024')
    if args.cache_regressor and not os.path.isdir(os.path.dirname(os.path.abspath(args.cache_regressor))):
        parser.error(f'the folder of --cache-regressor={args.cache_regressor} does not exist; create it first')
    if args.resolution is not None and args.data is not None:
        parser.error('--resolution applies to the synthetic images only; drop it when passing --data')
    return args


def run(args):
    """Yield one record per measurement."""
    device = generation.choose_device(args.device)
    G = generation.load_generator(args.network, device, trust_code=args.trust_code)
    if capabilities.label_kind(G) != 'camera':
        raise PoseBenchError(f'{args.network} is not camera-conditioned (c_dim={getattr(G, "c_dim", None)}); pose '
                             f'error needs a generator that takes {cameras.LABEL_DIM}-float camera labels.')
    untrained = None if args.no_untrained else untrained_copy(G, seed=args.seed)
    source = PoseSource(args.data, resolution=args.resolution or G.img_resolution)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if args.verbose else None
    regressor, heldout, seconds, cached = fit_regressor(source, args.regressor_images, args.seed,
                                                        args.cache_regressor, args.mirror, log)
    common = dict(measurement='pose_error', source=source.name, resolution=regressor.resolution)
    yield dict(common, subject='regressor_heldout', **heldout, regressor_images=args.regressor_images,
               cached=cached, time_s=round(seconds, 2))

    if args.poses == 'grid':
        labels = pose_grid(7, 5).repeat(math.ceil(args.num / 35), 1)[:args.num]
    else:
        labels = source.labels(args.num, seed=args.seed)
    common['poses'] = args.poses
    yield dict(common, subject='mean_pose', **measure_mean_pose(regressor, labels))
    if not args.no_renderer:
        start = time.perf_counter()
        record = measure_renderer(regressor, labels, source.resolution, seed=args.seed)
        yield dict(common, subject='renderer', **record, time_s=round(time.perf_counter() - start, 2))
    subjects = [('trained', G)] + ([] if untrained is None else [('untrained', untrained)])
    for subject, network in subjects:
        start = time.perf_counter()
        record = measure(network, regressor, labels, seed=args.seed, truncation_psi=args.trunc, device=device)
        yield dict(common, subject=subject, network=args.network, **record, img_resolution=network.img_resolution,
                   time_s=round(time.perf_counter() - start, 2))


@signals.exit_on_interrupt
def main(argv=None):
    args = parse_args(argv)
    try:
        for record in run(args):
            print(json.dumps(record), flush=True)
    except (PoseBenchError, generation.GenerationError, dataset_module.DatasetError) as error:
        sys.exit(f'Error: {error}')


if __name__ == '__main__':
    main()
