"""Pack images (with optional class or camera labels) into a dataset that training can read.

The output is an uncompressed zip (or a folder) of PNGs named `00000/img00000000.png`, 1000 per
sub-folder, plus `dataset.json` holding `{"labels": [[name, label], ...]}` or `{"labels": null}`
(and EpiGRAF's `"camera_angles"` with --export-camera-angles). A source dataset.json with EpiGRAF's
`{"camera_angles": {name: [yaw, pitch, roll]}}` and no labels gets 25-float camera labels.
Every image ends up with the same square power-of-two size and the same channel count (1 or 3).

Typical commands:

    # An image folder (recursive; labels from its dataset.json, if any), resized to 256x256.
    python dataset_tool.py --source=~/ffhq-images --dest=~/datasets/ffhq-256x256.zip \\
        --resolution=256x256 --resize-filter=box

    # Non-square photos: crop the centred square first.
    python dataset_tool.py --source=~/photos.zip --dest=~/datasets/photos-512.zip \\
        --transform=center-crop --resolution=512x512

    # RGBA renders composited over white.
    python dataset_tool.py --source=~/renders --dest=~/datasets/renders.zip \\
        --alpha=composite --background=255,255,255

    # Classic sources.
    python dataset_tool.py --source=~/downloads/cifar-10-python.tar.gz --dest=~/datasets/cifar10.zip
    python dataset_tool.py --source=~/downloads/train-images-idx3-ubyte.gz --dest=~/datasets/mnist.zip
    python dataset_tool.py --source=~/downloads/lsun/cat_lmdb --dest=~/datasets/lsuncat.zip \\
        --transform=center-crop --resolution=256x256 --max-images=200000

    # A small procedurally rendered multi-view dataset with 25-float camera labels.
    python dataset_tool.py --source=synthetic:shapes --dest=~/datasets/shapes-64.zip \\
        --max-images=10000 --resolution=64x64 --seed=0

    # An EpiGRAF dataset (dataset.json "camera_angles": yaw, pitch, roll) to 25-float camera labels;
    # --export-camera-angles keeps camera_angles in the output too, for EpiGRAF.
    python dataset_tool.py --source=~/epigraf/ffhq512 --dest=~/datasets/ffhq-512.zip \\
        --fov=12 --radius=1 --export-camera-angles
"""

import contextlib
import dataclasses
import gzip
import io
import json
import math
import os
import pickle
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from typing import Any, Callable, Iterator, Optional

import click
import numpy as np
import PIL.Image
import tqdm

from dnnlib import cli
from dnnlib import signals

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.webp')
IMAGES_PER_FOLDER = 1000
SYNTHETIC_SOURCES = ('shapes',)
DEFAULT_SYNTHETIC_RESOLUTION = 64
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # fixed, so that the same input gives the same zip bytes
CAMERA_LABEL_DIM = 25  # training/cameras.py: 16 cam2world + 9 intrinsics floats
DEFAULT_FOV = 12.0     # degrees across the image side: EpiGRAF's (and GRAM's) FFHQ and Cats cameras
DEFAULT_RADIUS = 1.0
MAX_ROLL = 1e-2        # radians; EpiGRAF's cameras are level
# Frontal is yaw 0 in EpiGRAF and pi/2 (~1.57) in GRAM's azimuths. 1 rad (57 degrees) lies between the
# two: a frontal-centred set (FFHQ, Cats: mean within a few hundredths of 0, spread ~0.3) or a 360-degree
# one (mean ~0) passes, a GRAM-convention one must be heavily lopsided towards the left to pass.
MAX_MEAN_YAW = 1.0


class DatasetToolError(click.ClickException):
    """A problem with the user's input: printed as one line, exit code 1, no traceback."""


@dataclasses.dataclass
class Item:
    name: str                 # where the image came from, for labels and error messages
    image: Any                # PIL.Image.Image or uint8 numpy array [H, W] / [H, W, C]
    label: Any = None         # None, int class, or list of floats


@dataclasses.dataclass
class Source:
    num_images: int
    items: Iterator[Item]


@dataclasses.dataclass
class Options:
    transform: Optional[str]
    resolution: Optional[tuple[int, int]]    # (width, height)
    resample: int
    alpha: Optional[str]
    background: tuple[int, int, int]


@dataclasses.dataclass
class AngleOptions:
    """How EpiGRAF's camera_angles become 25-float labels (training/cameras.py epigraf_angles_to_label)."""
    fov: float = DEFAULT_FOV          # degrees across the image side
    radius: float = DEFAULT_RADIUS


# ----------------------------------------------------------------------------------------------
# Option parsing.

def parse_resolution(text: Optional[str]) -> Optional[tuple[int, int]]:
    if text is None:
        return None
    match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', text)
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        raise DatasetToolError(f"--resolution '{text}' is not of the form WxH with positive integers; pass e.g. --resolution=256x256.")
    cli.check_image_size(int(match.group(1)), int(match.group(2)), 3, '--resolution')
    return int(match.group(1)), int(match.group(2))


def parse_background(text: str) -> tuple[int, int, int]:
    parts = text.split(',')
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise DatasetToolError(f"--background '{text}' is not three integers 0-255; pass e.g. --background=255,255,255.")
    return values


def parse_choice(option: str, value: Optional[str], choices: dict) -> Any:
    if value is None:
        return None
    if value not in choices:
        names = ', '.join(f'{option}={c}' for c in choices)
        raise DatasetToolError(f"Unknown {option} '{value}'; pass one of {names}.")
    return choices[value]


def is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


def check_requested_resolution(transform: Optional[str], resolution: Optional[tuple[int, int]]) -> None:
    """Fail before reading any image when the requested size cannot be a valid output."""
    if resolution is None:
        return
    width, height = resolution
    if transform == 'center-crop-wide':
        if not is_power_of_two(width) or height > width:
            raise DatasetToolError(f'--resolution={width}x{height} with --transform=center-crop-wide needs a power-of-two width and a height no larger than it (the content is letterboxed into a {width}x{width} canvas); pass e.g. --resolution=512x256.')
        return
    check_output_size(width, height, what='--resolution')


def check_output_size(width: int, height: int, what: str) -> None:
    if width != height or not is_power_of_two(width):
        raise DatasetToolError(f'{what} {width}x{height} is not a square power of two, which StyleGAN needs; pass e.g. --resolution=256x256 (with --transform=center-crop for non-square images).')


# ----------------------------------------------------------------------------------------------
# Sources: each returns a Source whose items yield (name, image, label).

def open_source(source: str, max_images: Optional[int], resolution: Optional[tuple[int, int]], seed: int,
                angles: AngleOptions = AngleOptions()) -> Source:
    if source.startswith('synthetic:'):
        return open_synthetic(source, max_images, resolution, seed)
    path = os.path.expanduser(source)
    if not os.path.exists(path):
        raise DatasetToolError(f"Source '{source}' does not exist; pass an image folder, a .zip, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz, an LSUN *_lmdb folder or synthetic:shapes.")
    name = os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        if name.endswith('_lmdb') or os.path.isfile(os.path.join(path, 'data.mdb')):
            return open_lsun(path, max_images)
        return open_image_folder(path, max_images, angles)
    if name.lower().endswith('.zip'):
        return open_image_zip(path, max_images, angles)
    if name.endswith('cifar-10-python.tar.gz'):
        return open_cifar10(path, max_images)
    if name.endswith('idx3-ubyte.gz'):
        return open_mnist(path, max_images)
    raise DatasetToolError(f"Unknown source kind '{source}'; pass an image folder, a .zip, cifar-10-python.tar.gz, train-images-idx3-ubyte.gz, an LSUN *_lmdb folder or synthetic:shapes.")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def parse_labels_json(data: bytes, where: str, angles: AngleOptions) -> Optional[dict]:
    """`{"labels": [[name, label], ...]}` or `{"labels": null}` -> dict name -> label, or None.

    Without per-image labels (no "labels" or null), EpiGRAF's `{"camera_angles": {name: [yaw, pitch,
    roll], ...}}` gives 25-float camera labels (`angles`: their field of view and radius)."""
    try:
        meta = json.loads(data)
        if isinstance(meta, dict) and 'camera_angles' in meta and meta.get('labels') is None:
            camera_angles, table = meta['camera_angles'], None
        else:
            camera_angles, labels = None, meta['labels']
            table = None if labels is None else {str(name).replace('\\', '/'): label for name, label in labels}
    except (ValueError, KeyError, TypeError) as error:
        raise DatasetToolError(f'{where} is not of the form {{"labels": [["name.png", label], ...]}} ({error}); fix or remove it.') from None
    return table if camera_angles is None else camera_angle_labels(camera_angles, where, angles)


def camera_angle_labels(camera_angles: Any, where: str, angles: AngleOptions) -> Optional[dict]:
    """EpiGRAF's camera_angles (name -> [yaw, pitch, roll], radians) -> dict name -> 25-float label.

    Refused: anything but finite (yaw, pitch, roll) triples, a pitch outside (0, pi), |roll| above
    MAX_ROLL, and yaws whose mean is more than MAX_MEAN_YAW from 0 (GRAM's azimuths, frontal at pi/2)."""
    if camera_angles is None:
        return None
    if not isinstance(camera_angles, dict):
        raise DatasetToolError(f'"camera_angles" in {where} is a {type(camera_angles).__name__}, not of the form '
                               f'{{"name.png": [yaw, pitch, roll], ...}}; fix or remove it.')
    table = {str(name).replace('\\', '/'): value for name, value in camera_angles.items()}
    if not table:
        return None
    for name, value in table.items():
        if (not isinstance(value, list) or len(value) != 3 or label_kind(value) is None
                or not all(math.isfinite(v) for v in value)):
            raise DatasetToolError(f"camera_angles of '{name}' in {where} is {json.dumps(value)[:60]}, not three finite "
                                   f"numbers [yaw, pitch, roll] in radians; fix or remove it.")
    for name, (_yaw, pitch, roll) in sorted(table.items()):
        if not 0 < pitch < math.pi:
            raise DatasetToolError(f"camera_angles of '{name}' in {where} has pitch {pitch:.4g} rad, but EpiGRAF's pitch "
                                   f"is the polar angle from +y, strictly between 0 and pi (pi/2 = horizon); fix it.")
        if abs(roll) > MAX_ROLL:
            raise DatasetToolError(f"camera_angles of '{name}' in {where} has roll {roll:.4g} rad, but EpiGRAF's cameras "
                                   f"have no roll (|roll| at most {MAX_ROLL:g}); fix it or remove the image.")
    mean_yaw = sum(value[0] for value in table.values()) / len(table)
    if abs(mean_yaw) > MAX_MEAN_YAW:
        raise DatasetToolError(f"yaws of {where} average {mean_yaw:.3f} rad; EpiGRAF's camera_angles need zero-centred "
                               f"yaws (frontal = 0) — subtract pi/2 if these are GRAM's azimuths.")
    from training import cameras  # needs torch: only for camera angles
    names = list(table)
    labels = cameras.epigraf_angles_to_label([table[n] for n in names], angles.fov, radius=angles.radius)
    return dict(zip(names, labels.tolist()))


def labelled_items(names: list[str], labels: Optional[dict], json_where: str, read: Callable[[str], Any]) -> Iterator[Item]:
    if labels is not None:
        check_label_values([(name, labels[name]) for name in names if name in labels], json_where)
    for name in names:
        label = None
        if labels is not None:
            if name not in labels:
                raise DatasetToolError(f"Image '{name}' has no label in {json_where}; add one or remove the image.")
            label = labels[name]
        yield Item(name, read(name), label)


def check_label_values(named_labels: list[tuple[str, Any]], where: str) -> None:
    """Before any image is read: refuse NaN or infinite label values, and 25-float labels that are cameras
    except for some that are not valid ones (a 25-float vector that is never a camera may be anything)."""
    vectors = [(name, label) for name, label in named_labels if isinstance(label, list) and label_kind(label)]
    for name, label in vectors:
        if not all(math.isfinite(value) for value in label):
            raise DatasetToolError(f"Label of '{name}' in {where} contains NaN or infinite values; fix or remove it "
                                   f"(labels must be finite numbers).")
    poses = [(name, label) for name, label in vectors if len(label) == CAMERA_LABEL_DIM]
    if not poses:
        return
    from training import cameras  # needs torch: only for 25-float labels
    import torch
    problems = cameras.problems(torch.tensor([label for _, label in poses], dtype=torch.float64))
    valid = [name for (name, _), problem in zip(poses, problems) if problem is None]
    invalid = [(name, problem) for (name, _), problem in zip(poses, problems) if problem is not None]
    if valid and invalid:
        name, problem = invalid[0]
        raise DatasetToolError(f"Label of '{name}' in {where} is 25 floats but not a valid camera, although that of "
                               f"'{valid[0]}' is one: {problem}; fix the camera or remove the image.")


def open_image_folder(path: str, max_images: Optional[int], angles: AngleOptions = AngleOptions()) -> Source:
    names = []
    for root, _dirs, files in os.walk(path):
        for file in files:
            if is_image_name(file):
                names.append(os.path.relpath(os.path.join(root, file), path).replace(os.sep, '/'))
    names = sorted(names)[:max_images]
    if not names:
        raise DatasetToolError(f"No images found in source folder '{path}'; it must contain PNG, JPEG or WebP files.")
    json_path = os.path.join(path, 'dataset.json')
    labels = None
    if os.path.isfile(json_path):
        with open(json_path, 'rb') as f:
            labels = parse_labels_json(f.read(), f"'{json_path}'", angles)

    def read(name: str) -> PIL.Image.Image:
        with open(os.path.join(path, name), 'rb') as f:
            return decode_image(f.read(), os.path.join(path, name))

    return Source(len(names), labelled_items(names, labels, f"'{json_path}'", read))


def open_image_zip(path: str, max_images: Optional[int], angles: AngleOptions = AngleOptions()) -> Source:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DatasetToolError(f"Cannot read source zip '{path}' ({error}); pass a valid zip archive.") from None
    names = sorted(n for n in archive.namelist() if is_image_name(n) and not n.endswith('/'))[:max_images]
    if not names:
        archive.close()
        raise DatasetToolError(f"No images found in source zip '{path}'; it must contain PNG, JPEG or WebP files.")
    where = f"dataset.json inside '{path}'"
    labels = parse_labels_json(archive.read('dataset.json'), where, angles) if 'dataset.json' in archive.namelist() else None

    def items() -> Iterator[Item]:
        with archive:
            yield from labelled_items(names, labels, where, lambda n: decode_image(archive.read(n), f'{path}:{n}'))

    return Source(len(names), items())


class _ArrayUnpickler(pickle.Unpickler):
    """Reads the CIFAR-10 batches (dicts of bytes, lists and numpy arrays) without running code from the file."""

    _ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
                ('numpy._core.numeric', '_frombuffer'), ('numpy', 'ndarray'), ('numpy', 'dtype'),
                ('_codecs', 'encode')}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f'unexpected object {module}.{name}')
        return super().find_class(module, name)


def open_cifar10(path: str, max_images: Optional[int]) -> Source:
    images, labels = [], []
    try:
        with tarfile.open(path, 'r:gz') as tar:
            members = {os.path.basename(m.name): m for m in tar.getmembers() if m.isfile()}
            for batch in (f'data_batch_{i}' for i in range(1, 6)):
                if batch in members:
                    data = _ArrayUnpickler(tar.extractfile(members[batch]), encoding='bytes').load()
                    images.append(np.asarray(data[b'data'], dtype=np.uint8).reshape(-1, 3, 32, 32))
                    labels.append(np.asarray(data[b'labels'], dtype=np.int64))
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError, KeyError, ValueError) as error:
        raise DatasetToolError(f"Cannot read CIFAR-10 tarball '{path}' ({error}); pass the original cifar-10-python.tar.gz.") from None
    if not images:
        raise DatasetToolError(f"No images found in CIFAR-10 tarball '{path}'; it must contain data_batch_1..5.")
    images = np.concatenate(images).transpose(0, 2, 3, 1)[:max_images]  # NCHW -> NHWC
    labels = np.concatenate(labels)[:max_images]
    items = (Item(f'{os.path.basename(path)}[{i}]', images[i], int(labels[i])) for i in range(len(images)))
    return Source(len(images), items)


def read_idx(path: str, magic: int, ndim: int) -> np.ndarray:
    """The MNIST idx format: big-endian int32 magic and dimensions, then uint8 data."""
    try:
        with gzip.open(path, 'rb') as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise DatasetToolError(f"Cannot read MNIST file '{path}' ({error}); pass the original gzipped idx file.") from None
    header = np.frombuffer(data[:4 + 4 * ndim], dtype='>i4') if len(data) >= 4 + 4 * ndim else np.zeros(0)
    if len(header) != ndim + 1 or header[0] != magic or len(data) != 4 + 4 * ndim + int(np.prod(header[1:])):
        raise DatasetToolError(f"MNIST file '{path}' does not have the idx layout (magic {magic}); pass the original gzipped idx file.")
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape([int(d) for d in header[1:]])


def open_mnist(path: str, max_images: Optional[int]) -> Source:
    images = read_idx(path, magic=2051, ndim=3)[:max_images]
    images = np.pad(images, [(0, 0), (2, 2), (2, 2)], mode='constant', constant_values=0)  # 28 -> 32
    labels_path = os.path.join(os.path.dirname(path), os.path.basename(path).replace('images-idx3', 'labels-idx1'))
    labels = None
    if labels_path != path and os.path.isfile(labels_path):
        labels = read_idx(labels_path, magic=2049, ndim=1)[:max_images]
        if len(labels) != len(images):
            raise DatasetToolError(f"MNIST labels '{labels_path}' hold {len(labels)} labels for {len(images)} images; pass matching files.")
    if len(images) == 0:
        raise DatasetToolError(f"No images found in MNIST file '{path}'.")
    name = os.path.basename(path)
    items = (Item(f'{name}[{i}]', images[i], None if labels is None else int(labels[i])) for i in range(len(images)))
    return Source(len(images), items)


def open_lsun(path: str, max_images: Optional[int]) -> Source:
    try:
        import lmdb  # optional dependency, only for this source
    except ImportError:
        raise DatasetToolError(f"Reading the LSUN source '{path}' needs the lmdb package; run `pip install lmdb`.") from None
    try:
        env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=1)
        num_images = env.stat()['entries']
    except lmdb.Error as error:
        raise DatasetToolError(f"Cannot open LSUN database '{path}' ({error}); pass an LSUN *_lmdb folder.") from None
    if max_images is not None:
        num_images = min(num_images, max_images)
    if num_images == 0:
        raise DatasetToolError(f"No images found in LSUN database '{path}'.")

    def items() -> Iterator[Item]:
        with env, env.begin(write=False) as txn:
            for index, (key, value) in enumerate(txn.cursor()):
                if index >= num_images:
                    break
                name = f"{path}:{key.decode('ascii', 'replace')}"
                yield Item(name, decode_image(bytes(value), name))

    return Source(num_images, items())


def open_synthetic(source: str, max_images: Optional[int], resolution: Optional[tuple[int, int]], seed: int) -> Source:
    kind = source[len('synthetic:'):]
    if kind not in SYNTHETIC_SOURCES:
        raise DatasetToolError(f"Unknown synthetic source '{source}'; pass --source=synthetic:shapes.")
    if max_images is None:
        raise DatasetToolError(f'--source={source} needs --max-images to know how many images to render; pass e.g. --max-images=10000.')
    width, height = resolution or (DEFAULT_SYNTHETIC_RESOLUTION, DEFAULT_SYNTHETIC_RESOLUTION)
    check_output_size(width, height, what=f'--resolution for {source}')
    try:
        from training import synthetic_shapes
    except ImportError as error:
        raise DatasetToolError(f'--source={source} needs training/synthetic_shapes.py, which cannot be imported ({error}); update the checkout.') from None
    rendered = synthetic_shapes.render_dataset(num_images=max_images, resolution=width, seed=seed)
    items = (Item(f'{source}[{i}]', image, np.asarray(label, dtype=np.float32).tolist()) for i, (image, label) in enumerate(rendered))
    return Source(max_images, items)


# ----------------------------------------------------------------------------------------------
# Per-image processing: decode, alpha, transform, resize.

def decode_image(data: bytes, name: str) -> PIL.Image.Image:
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises many kinds for corrupt data
        raise DatasetToolError(f"Cannot decode image '{name}' ({type(error).__name__}: {error}); remove or replace the file.") from None
    return image


def to_pil(image: Any, name: str) -> PIL.Image.Image:
    if isinstance(image, PIL.Image.Image):
        return image
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise DatasetToolError(f"Image '{name}' is a {array.dtype} array of shape {array.shape}, not uint8 [H, W] or [H, W, 1|3|4]; fix the source.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return PIL.Image.fromarray(np.ascontiguousarray(array))


def normalize_mode(image: PIL.Image.Image, name: str, opts: Options) -> PIL.Image.Image:
    """Bring any 8-bit image to 'L' or 'RGB', handling an alpha channel only as the user asked."""
    if image.mode == 'P':
        image = image.convert('RGBA' if 'transparency' in image.info else 'RGB')
    if image.mode in ('1', 'L', 'RGB'):
        return image.convert('L') if image.mode == '1' else image
    if image.mode in ('CMYK', 'YCbCr', 'LAB', 'HSV'):
        return image.convert('RGB')
    if image.mode in ('LA', 'La', 'PA', 'RGBA', 'RGBa'):
        return handle_alpha(image, name, opts)
    raise DatasetToolError(f"Image '{name}' has pixel mode '{image.mode}', which is not 8-bit grayscale, RGB or RGBA; convert it first.")


def handle_alpha(image: PIL.Image.Image, name: str, opts: Options) -> PIL.Image.Image:
    if opts.alpha is None:
        raise DatasetToolError(f"Image '{name}' has an alpha channel; pass --alpha=drop to ignore it or --alpha=composite --background=R,G,B to blend over a colour.")
    if opts.alpha == 'drop':
        return image.convert('L' if image.mode in ('LA', 'La') else 'RGB')
    rgba = np.asarray(image.convert('RGBA'), dtype=np.uint32)
    alpha = rgba[:, :, 3:]
    background = np.asarray(opts.background, dtype=np.uint32)
    # Exact rounding of rgb*a/255 + bg*(255-a)/255 in integers.
    blended = (rgba[:, :, :3] * alpha + background * (255 - alpha) + 127) // 255
    return PIL.Image.fromarray(blended.astype(np.uint8), 'RGB')


def center_crop(image: PIL.Image.Image) -> PIL.Image.Image:
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def center_crop_wide(image: PIL.Image.Image, opts: Options) -> PIL.Image.Image:
    """Crop a centred region of aspect W:H (2:1 for a square --resolution), resize it to W x H and
    letterbox it into a black W x W canvas, as the official tool does for LSUN cars."""
    width, height = image.size
    out_width, out_height = opts.resolution or (width, width // 2)
    if out_height == out_width:
        out_height = out_width // 2
    crop_height = min(height, max(1, round(width * out_height / out_width)))
    crop_width = min(width, max(1, round(crop_height * out_width / out_height)))
    left, top = (width - crop_width) // 2, (height - crop_height) // 2
    content = image.crop((left, top, left + crop_width, top + crop_height))
    if content.size != (out_width, out_height):
        content = content.resize((out_width, out_height), opts.resample)
    canvas = PIL.Image.new(image.mode, (out_width, out_width), 0)
    canvas.paste(content, (0, (out_width - out_height) // 2))
    return canvas


def transform_image(image: PIL.Image.Image, opts: Options) -> PIL.Image.Image:
    if opts.transform == 'center-crop-wide':
        return center_crop_wide(image, opts)
    if opts.transform == 'center-crop':
        image = center_crop(image)
    if opts.resolution is not None and image.size != opts.resolution:
        image = image.resize(opts.resolution, opts.resample)
    return image


def process(item: Item, opts: Options) -> PIL.Image.Image:
    image = normalize_mode(to_pil(item.image, item.name), item.name, opts)
    return transform_image(image, opts)


# ----------------------------------------------------------------------------------------------
# Consistency checks across the dataset.

class DatasetChecker:
    """Remembers the first image's size, channels and label kind and rejects any that differ."""

    def __init__(self):
        self.first = None        # (name, size, mode)
        self.label_kind = None   # (name, kind)

    def check_image(self, name: str, image: PIL.Image.Image) -> None:
        if self.first is None:
            check_output_size(*image.size, what=f"Output size of '{name}'")
            self.first = (name, image.size, image.mode)
            return
        first_name, first_size, first_mode = self.first
        if image.size != first_size:
            raise DatasetToolError(f"Images '{first_name}' ({first_size[0]}x{first_size[1]}) and '{name}' ({image.size[0]}x{image.size[1]}) differ in size; pass --resolution=WxH to resize them all.")
        if image.mode != first_mode:
            raise DatasetToolError(f"Image '{name}' has {channel_count(image.mode)} channel(s) but '{first_name}' has {channel_count(first_mode)}; convert the images so that all are RGB or all grayscale.")

    def check_label(self, name: str, label: Any) -> None:
        kind = label_kind(label)
        if kind is None:
            raise DatasetToolError(f"Label of '{name}' is {json.dumps(label)[:60]}, not an integer class or a list of numbers; fix dataset.json.")
        if self.label_kind is None:
            self.label_kind = (name, kind)
        elif self.label_kind[1] != kind:
            raise DatasetToolError(f"Label of '{name}' is {describe_label_kind(kind)} but that of '{self.label_kind[0]}' is {describe_label_kind(self.label_kind[1])}; make all labels in dataset.json the same kind.")


def channel_count(mode: str) -> int:
    return len(mode)  # 'L' or 'RGB'


def label_kind(label: Any) -> Optional[tuple]:
    if isinstance(label, int) and not isinstance(label, bool):
        return ('class',)
    if isinstance(label, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in label):
        return ('vector', len(label))
    return None


def describe_label_kind(kind: Optional[tuple]) -> str:
    if kind is None:
        return 'none'
    return 'class integers' if kind[0] == 'class' else f'{kind[1]} floats'


def camera_angles_of(labels: Optional[list], source: str) -> dict:
    """EpiGRAF's camera_angles {new name: [yaw, pitch, 0]} of the written 25-float camera labels (camera
    centres about the world origin; radius, look-at point, roll and field of view are not kept)."""
    kind = label_kind(labels[0]) if labels else None
    if kind != ('vector', CAMERA_LABEL_DIM):
        has = 'no labels' if kind is None else f'labels of {describe_label_kind(kind)}'
        raise DatasetToolError(f"--export-camera-angles needs 25-float camera labels, but '{source}' has {has}; "
                               f"drop the option or give the images camera labels.")
    from training import cameras  # needs torch: only for 25-float labels
    import torch
    c = torch.tensor(labels, dtype=torch.float64)
    problem = next(((i, p) for i, p in enumerate(cameras.problems(c)) if p is not None), None)
    if problem is not None:
        raise DatasetToolError(f"--export-camera-angles needs camera labels, but the 25 floats of image #{problem[0]} of "
                               f"'{source}' are not a valid camera: {problem[1]}; drop the option.")
    angles = cameras.epigraf_angles_from_label(c).tolist()
    return {archive_name(i): angle for i, angle in enumerate(angles)}


# ----------------------------------------------------------------------------------------------
# Writers: an uncompressed zip or a folder, both built under a temporary name and renamed at the end.

def archive_name(index: int) -> str:
    return f'{index // IMAGES_PER_FOLDER:05d}/img{index:08d}.png'


def encode_png(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format='png', compress_level=0, optimize=False)
    return buffer.getvalue()


def default_permissions(mode: int) -> int:
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


@contextlib.contextmanager
def created_parents(path: str) -> Iterator[None]:
    """Create the missing parent folders of `path`, removing them again if the body fails."""
    parent = os.path.dirname(os.path.abspath(path))
    topmost_missing = None
    while not os.path.exists(parent):
        topmost_missing = parent
        parent = os.path.dirname(parent)
    if topmost_missing is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)))
    try:
        yield
    except BaseException:
        if topmost_missing is not None:
            shutil.rmtree(topmost_missing, ignore_errors=True)
        raise


@contextlib.contextmanager
def open_destination(dest: str) -> Iterator[Callable[[str, bytes], None]]:
    """Yield `write(name, data)`; on success the output appears at `dest` at once, on any error
    (or Ctrl-C) nothing is left behind."""
    dest = os.path.abspath(dest)
    directory, base = os.path.split(dest)
    with created_parents(dest):
        if dest.lower().endswith('.zip'):
            fd, temp = tempfile.mkstemp(dir=directory, prefix=f'.{base}.', suffix='.tmp')
            os.close(fd)
            try:
                with zipfile.ZipFile(temp, 'w', compression=zipfile.ZIP_STORED) as archive:
                    def write(name: str, data: bytes) -> None:
                        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                        info.external_attr = 0o644 << 16
                        archive.writestr(info, data, compress_type=zipfile.ZIP_STORED)
                    yield write
                os.chmod(temp, default_permissions(0o666))
                refuse_existing(dest)
                os.rename(temp, dest)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(temp)
                raise
        else:
            temp = tempfile.mkdtemp(dir=directory, prefix=f'.{base}.', suffix='.tmp')
            try:
                def write(name: str, data: bytes) -> None:
                    path = os.path.join(temp, name)
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    with open(path, 'wb') as f:
                        f.write(data)
                yield write
                os.chmod(temp, default_permissions(0o777))
                refuse_existing(dest)
                os.rename(temp, dest)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise


def refuse_existing(dest: str) -> None:
    if os.path.lexists(dest):
        raise DatasetToolError(f"Destination '{dest}' already exists; remove it or pass another --dest.")


# ----------------------------------------------------------------------------------------------
# Main.

@contextlib.contextmanager
def progress(total: int) -> Iterator[Callable[[int], None]]:
    """Yield `update(done)`: a tqdm bar on a terminal, otherwise one log line about every 10 seconds."""
    if sys.stderr.isatty():
        with tqdm.tqdm(total=total, unit='img', dynamic_ncols=True) as bar:
            yield lambda done: bar.update(done - bar.n)
        return
    last_log = [time.monotonic()]

    def log(done: int) -> None:
        if time.monotonic() - last_log[0] >= 10:
            last_log[0] = time.monotonic()
            click.echo(f'{done}/{total} images', err=True)
    yield log


def convert_dataset(source: str, dest: str, max_images: Optional[int], seed: int, opts: Options,
                    angles: AngleOptions = AngleOptions(), export_camera_angles: bool = False) -> str:
    """Convert `source` into `dest` and return the one-line summary.

    `angles`: how EpiGRAF camera_angles in a source dataset.json become labels. `export_camera_angles`:
    also write EpiGRAF's camera_angles (keyed by the new names) for 25-float camera labels."""
    refuse_existing(os.path.abspath(os.path.expanduser(dest)))
    cli.check_output_path(dest, '--dest', 'file' if dest.lower().endswith('.zip') else 'dir')
    check_requested_resolution(opts.transform, opts.resolution)
    src = open_source(source, max_images, opts.resolution, seed, angles)
    checker = DatasetChecker()
    labels = []
    start = time.perf_counter()
    count = 0
    with open_destination(os.path.expanduser(dest)) as write, progress(src.num_images) as update:
        for index, item in enumerate(src.items):
            image = process(item, opts)
            checker.check_image(item.name, image)
            if item.label is not None:
                checker.check_label(item.name, item.label)
            labels.append(item.label)
            write(archive_name(index), encode_png(image))
            count = index + 1
            update(count)
        if count == 0:
            raise DatasetToolError(f"No images found in source '{source}'.")
        has_labels = all(label is not None for label in labels)
        metadata = {'labels': [[archive_name(i), label] for i, label in enumerate(labels)] if has_labels else None}
        if export_camera_angles:
            metadata['camera_angles'] = camera_angles_of(labels if has_labels else None, source)
        write('dataset.json', json.dumps(metadata).encode('utf-8'))
    seconds = max(time.perf_counter() - start, 1e-9)
    _, (width, height), mode = checker.first
    kind = describe_label_kind(checker.label_kind[1] if has_labels else None)
    return (f'Wrote {count} images, {width}x{height}, {channel_count(mode)} channel(s), labels: {kind}, '
            f'to {dest} at {count / seconds:.1f} images/s.')


TRANSFORMS = {'none': None, 'center-crop': 'center-crop', 'center-crop-wide': 'center-crop-wide'}
RESAMPLE_FILTERS = {'box': PIL.Image.Resampling.BOX, 'lanczos': PIL.Image.Resampling.LANCZOS}


def help_epilog() -> str:
    """The module docstring's examples, each paragraph marked so that click keeps its line breaks."""
    examples = __doc__.split('Typical commands:')[1].strip('\n')
    return 'Examples:\n\n' + '\n\n'.join('\b\n' + p for p in examples.split('\n\n'))


@click.command(epilog=help_epilog())
@click.option('--source', required=True, metavar='PATH',
              help='Image folder (recursive; PNG/JPEG/WebP; optional dataset.json labels), image .zip, '
                   'cifar-10-python.tar.gz, train-images-idx3-ubyte.gz (MNIST, padded to 32x32), '
                   'LSUN *_lmdb folder (needs `pip install lmdb`), or synthetic:shapes.')
@click.option('--dest', required=True, metavar='PATH',
              help='Output: a path ending in .zip gives an uncompressed zip, any other a folder. Must not exist.')
@click.option('--max-images', type=int, metavar='INT',
              help='Write at most this many images (required for synthetic sources).')
@click.option('--transform', metavar='none|center-crop|center-crop-wide',
              help='center-crop: crop the largest centred square. center-crop-wide: crop a centred WxH '
                   '(2:1 for a square --resolution) region and letterbox it into a WxW canvas. Default: none.')
@click.option('--resolution', metavar='WxH',
              help=f'Output size, e.g. 256x256; must end square and a power of two, at most {cli.MAX_IMAGE_SIDE} per side. '
                   f'Default: keep the source size.')
@click.option('--resize-filter', default='lanczos', show_default=True, metavar='box|lanczos',
              help='Resampling filter for resizing (box gives exact block means for integer downscales).')
@click.option('--alpha', metavar='drop|composite',
              help='How to treat images with an alpha channel (they are refused without this option): '
                   'drop it, or composite over --background.')
@click.option('--background', default='255,255,255', show_default=True, metavar='R,G,B',
              help='Background colour for --alpha=composite.')
@click.option('--seed', default=0, show_default=True, type=int, metavar='INT',
              help='Random seed for synthetic sources.')
@click.option('--fov', default=DEFAULT_FOV, show_default=True, type=float, metavar='DEGREES',
              help='Only for a source dataset.json with EpiGRAF\'s "camera_angles" {name: [yaw, pitch, roll]} '
                   '(radians; yaw zero-centred, frontal = 0; pitch from +y; roll 0) and no "labels": the cameras\' '
                   'field of view across the image side, for their 25-float labels (12 for FFHQ and Cats).')
@click.option('--radius', default=DEFAULT_RADIUS, show_default=True, type=float, metavar='FLOAT',
              help='Only for "camera_angles": the distance of the cameras from the world origin, which they look at.')
@click.option('--export-camera-angles', is_flag=True,
              help='For 25-float camera labels: also write EpiGRAF\'s "camera_angles" {new name: [yaw, pitch, 0]} '
                   'into the output dataset.json (camera centres about the world origin; radius, look-at point and '
                   'field of view are not kept), so that EpiGRAF can read it.')
@signals.exit_on_interrupt
def main(source, dest, max_images, transform, resolution, resize_filter, alpha, background, seed, fov, radius,
         export_camera_angles):
    """Pack images and their labels into an uncompressed zip (or folder) dataset for training.

    Every output image is a PNG named 00000/img00000000.png (1000 per folder) with the same square,
    power-of-two size and the same channel count (1 or 3); dataset.json holds
    {"labels": [[name, label], ...]} (class integers or lists of floats such as 25-float cameras,
    re-keyed from the source's dataset.json, or converted from its EpiGRAF "camera_angles") or
    {"labels": null}.
    """
    if max_images is not None and max_images < 1:
        raise DatasetToolError(f'--max-images={max_images} must be at least 1.')
    opts = Options(
        transform=parse_choice('--transform', transform, TRANSFORMS),
        resolution=parse_resolution(resolution),
        resample=parse_choice('--resize-filter', resize_filter, RESAMPLE_FILTERS),
        alpha=parse_choice('--alpha', alpha, {'drop': 'drop', 'composite': 'composite'}),
        background=parse_background(background),
    )
    if not (math.isfinite(fov) and 0 < fov < 180):
        raise DatasetToolError(f'--fov={fov:g} must be an angle in degrees between 0 and 180 (exclusive); pass e.g. --fov=12.')
    if not (math.isfinite(radius) and radius > 0):
        raise DatasetToolError(f'--radius={radius:g} must be a positive distance; pass e.g. --radius=1.')
    click.echo(convert_dataset(source, dest, max_images, seed, opts, AngleOptions(fov, radius), export_camera_angles))


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
