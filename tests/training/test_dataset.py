"""training/dataset.py: pixels, labels, subsets, mirroring (camera poses included), workers and every user error."""

import json
import os
import pickle
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import dataset_tool  # noqa: E402
from training import cameras  # noqa: E402
from training.dataset import Dataset, DatasetError, ImageFolderDataset  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Helpers.


def random_images(count, shape, seed=0):
    return [np.random.default_rng([seed, i]).integers(0, 256, size=shape, dtype=np.uint8) for i in range(count)]


def write_folder(folder, images, labels=None, names=None):
    """Write `images` (HWC or HW uint8) as PNGs into `folder`, with `labels` (a JSON value) in dataset.json."""
    names = names or [f'img{i:03d}.png' for i in range(len(images))]
    for name, image in zip(names, images):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        PIL.Image.fromarray(image).save(path)
    if labels is not None:
        with open(os.path.join(folder, 'dataset.json'), 'w') as f:
            json.dump(labels, f)
    return str(folder)


def pack(*args):
    """Run dataset_tool.py's CLI in-process."""
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)


def chw(image):
    return image.transpose(2, 0, 1) if image.ndim == 3 else image[np.newaxis]


def raise_message(fn, *args, **kwargs):
    with pytest.raises(DatasetError) as info:
        fn(*args, **kwargs)
    return str(info.value)


def assert_one_sentence(message, *words):
    assert '\n' not in message and message.endswith('.'), message
    assert 'Traceback' not in message
    for word in words:
        assert str(word) in message, (word, message)


CLASSES = [0, 2, 1, 2, 0]


@pytest.fixture(scope='module')
def class_source(tmp_path_factory):
    """(folder of 5 RGB 8x8 PNGs with class labels, the images in name order)."""
    folder = tmp_path_factory.mktemp('class_source')
    images = random_images(5, [8, 8, 3])
    names = [f'img{i:03d}.png' for i in range(5)]
    write_folder(folder, images, {'labels': [[n, c] for n, c in zip(names, CLASSES)]}, names)
    return str(folder), images


@pytest.fixture(scope='module')
def class_zip(class_source, tmp_path_factory):
    dest = tmp_path_factory.mktemp('class_zip') / 'classes.zip'
    pack('--source', class_source[0], '--dest', dest)
    return str(dest), class_source[1]


@pytest.fixture(scope='module')
def shapes_zip(tmp_path_factory):
    """4 synthetic multi-view images, 16x16, with 25-float camera labels."""
    dest = tmp_path_factory.mktemp('shapes') / 'shapes-16.zip'
    pack('--source', 'synthetic:shapes', '--dest', dest, '--max-images', 4, '--resolution', '16x16', '--seed', 1)
    return str(dest)


@pytest.fixture(scope='module')
def ten_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp('ten')
    images = random_images(10, [4, 4, 3], seed=1)
    return write_folder(folder, images), images

# ----------------------------------------------------------------------------------------------
# Reading what dataset_tool.py writes.


@pytest.mark.parametrize('dest_kind', ['zip', 'folder'])
def test_pixels_and_class_labels_from_dataset_tool(class_source, tmp_path, dest_kind):
    dest = tmp_path / ('out.zip' if dest_kind == 'zip' else 'out')
    pack('--source', class_source[0], '--dest', dest)
    ds = ImageFolderDataset(str(dest), resolution=8, use_labels=True)
    assert len(ds) == 5 and ds.name == 'out'
    assert ds.image_shape == [3, 8, 8] and ds.num_channels == 3 and ds.resolution == 8
    assert ds.has_labels and ds.has_onehot_labels and not ds.has_camera_labels
    assert ds.label_shape == [3] and ds.label_dim == 3
    for i, (source_image, cls) in enumerate(zip(class_source[1], CLASSES)):
        image, label = ds[i]
        assert image.dtype == np.uint8 and image.flags.c_contiguous
        np.testing.assert_array_equal(image, chw(source_image))
        assert label.dtype == np.float32
        np.testing.assert_array_equal(label, np.eye(3, dtype=np.float32)[cls])
        np.testing.assert_array_equal(ds.get_label(i), label)
        details = ds.get_details(i)
        assert details.raw_idx == i and details.xflip is False and details.raw_label == cls


def test_items_are_independent_copies(class_zip):
    ds = ImageFolderDataset(class_zip[0])
    image, _ = ds[0]
    image[:] = 0
    np.testing.assert_array_equal(ds[0][0], chw(class_zip[1][0]))


def test_without_use_labels_labels_are_empty(class_zip):
    ds = ImageFolderDataset(class_zip[0], use_labels=False)
    assert ds.label_shape == [0] and ds.label_dim == 0 and not ds.has_labels and not ds.has_camera_labels
    label = ds[0][1]
    assert label.shape == (0,) and label.dtype == np.float32


def test_grayscale_gets_a_channel_axis(tmp_path):
    images = random_images(3, [8, 8], seed=2)
    ds = ImageFolderDataset(write_folder(tmp_path / 'gray', images))
    assert ds.image_shape == [1, 8, 8] and ds.num_channels == 1
    for i, image in enumerate(images):
        np.testing.assert_array_equal(ds[i][0], image[np.newaxis])


def test_folder_is_searched_recursively_in_sorted_order(tmp_path):
    images = random_images(3, [4, 4, 3], seed=3)
    names = ['b/z.png', 'a.png', 'b/a.png']
    folder = write_folder(tmp_path / 'nested', images, {'labels': [[n, i] for i, n in enumerate(names)]}, names)
    ds = ImageFolderDataset(folder + os.sep, use_labels=True)
    assert ds.name == 'nested'
    order = [1, 2, 0]  # a.png, b/a.png, b/z.png
    for i, j in enumerate(order):
        np.testing.assert_array_equal(ds[i][0], chw(images[j]))
        assert ds.get_details(i).raw_label == j

# ----------------------------------------------------------------------------------------------
# Subsets and mirroring.


def test_max_size_subset_is_seeded_sorted_and_deterministic(ten_images):
    path, images = ten_images
    subsets = {}
    for seed in (0, 3):
        ds = ImageFolderDataset(path, max_size=4, random_seed=seed)
        expected = np.arange(10)
        np.random.RandomState(seed).shuffle(expected)
        expected = np.sort(expected[:4])
        raw = [ds.get_details(i).raw_idx for i in range(len(ds))]
        assert raw == expected.tolist() and raw == sorted(raw) and len(ds) == 4
        again = ImageFolderDataset(path, max_size=4, random_seed=seed)
        assert [again.get_details(i).raw_idx for i in range(4)] == raw
        for i, r in enumerate(raw):
            np.testing.assert_array_equal(ds[i][0], chw(images[r]))
        subsets[seed] = raw
    assert subsets[0] != subsets[3]
    assert len(ImageFolderDataset(path, max_size=10)) == 10 and len(ImageFolderDataset(path, max_size=99)) == 10


def test_xflip_doubles_with_mirrored_second_half(class_zip):
    ds = ImageFolderDataset(class_zip[0], use_labels=True, xflip=True)
    assert len(ds) == 10
    for i in range(5):
        image, label = ds[i]
        flipped, flipped_label = ds[5 + i]
        assert flipped.flags.c_contiguous
        np.testing.assert_array_equal(flipped, np.flip(image, axis=2))
        np.testing.assert_array_equal(flipped_label, label)  # class labels are unchanged by a mirror
        assert ds.get_details(i).xflip is False and ds.get_details(5 + i).xflip is True
        assert ds.get_details(5 + i).raw_idx == i


def test_max_size_is_applied_before_xflip(ten_images):
    ds = ImageFolderDataset(ten_images[0], max_size=3, random_seed=5, xflip=True)
    raw = [ds.get_details(i).raw_idx for i in range(len(ds))]
    assert len(ds) == 6 and raw[:3] == raw[3:] and raw[:3] == sorted(raw[:3])
    for i in range(3):
        np.testing.assert_array_equal(ds[3 + i][0], chw(ten_images[1][raw[i]])[:, :, ::-1])

# ----------------------------------------------------------------------------------------------
# Camera labels.


def test_camera_labels_from_synthetic_shapes(shapes_zip):
    ds = ImageFolderDataset(shapes_zip, use_labels=True)
    assert ds.name == 'shapes-16' and ds.image_shape == [3, 16, 16]
    assert ds.has_camera_labels and ds.has_labels and not ds.has_onehot_labels and ds.label_dim == 25
    with zipfile.ZipFile(shapes_zip) as archive:
        stored = dict(json.loads(archive.read('dataset.json'))['labels'])
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.get_label(i), np.float32(stored[f'00000/img{i:08d}.png']))
    cameras.validate(torch.from_numpy(np.stack([ds.get_label(i) for i in range(len(ds))])))


def test_camera_xflip_is_refused_by_default(shapes_zip):
    message = raise_message(ImageFolderDataset, shapes_zip, use_labels=True, xflip=True)
    assert_one_sentence(message, shapes_zip, 'camera', '--mirror-cameras', 'xflip_camera_labels=True', '--mirror')
    # Without labels there is no pose to mismatch.
    assert len(ImageFolderDataset(shapes_zip, use_labels=False, xflip=True)) == 8


def test_camera_xflip_mirrors_the_pose_when_asked(shapes_zip):
    ds = ImageFolderDataset(shapes_zip, use_labels=True, xflip=True, xflip_camera_labels=True)
    n = len(ds) // 2
    for i in range(n):
        image, label = ds[i]
        flipped, flipped_label = ds[n + i]
        raw = ds.get_details(n + i).raw_label
        np.testing.assert_array_equal(label, raw)
        np.testing.assert_array_equal(flipped, image[:, :, ::-1])
        assert flipped_label.dtype == np.float32
        np.testing.assert_array_equal(flipped_label, cameras.flip_yaw(torch.from_numpy(raw)).numpy())
        assert not np.array_equal(flipped_label, raw)
        cameras.validate(torch.from_numpy(flipped_label[np.newaxis]))


def test_non_camera_25_float_labels_flip_freely(tmp_path):
    images = random_images(2, [4, 4, 3])
    labels = np.random.default_rng(0).standard_normal([2, 25]).tolist()
    folder = write_folder(tmp_path / 'vec', images, {'labels': [[f'img{i:03d}.png', labels[i]] for i in range(2)]})
    ds = ImageFolderDataset(folder, use_labels=True, xflip=True)
    assert ds.label_dim == 25 and not ds.has_camera_labels
    np.testing.assert_array_equal(ds[3][1], np.float32(labels[1]))

# ----------------------------------------------------------------------------------------------
# Worker processes.


def test_pickling_drops_cached_labels_and_zip_handle(class_zip):
    ds = ImageFolderDataset(class_zip[0], use_labels=True)
    ds[0]
    state = ds.__getstate__()
    assert state['_raw_labels'] is None and state['_zipfile'] is None
    copy = pickle.loads(pickle.dumps(ds))
    for i in range(len(ds)):
        np.testing.assert_array_equal(copy[i][0], ds[i][0])
        np.testing.assert_array_equal(copy[i][1], ds[i][1])


@pytest.mark.parametrize('start_method', ['fork', 'spawn'])
def test_dataloader_with_two_workers_over_a_zip(class_zip, start_method):
    if start_method not in torch.multiprocessing.get_all_start_methods():
        pytest.skip(f'no {start_method} start method on this platform')
    ds = ImageFolderDataset(class_zip[0], use_labels=True, xflip=True)
    ds[0]  # the parent's zip handle is open before the workers start (fork copies it, spawn pickles the dataset)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, shuffle=False,
                                         multiprocessing_context=start_method)
    images, labels = zip(*loader)
    images, labels = torch.cat(images).numpy(), torch.cat(labels).numpy()
    np.testing.assert_array_equal(images, np.stack([ds[i][0] for i in range(len(ds))]))
    np.testing.assert_array_equal(labels, np.stack([ds.get_label(i) for i in range(len(ds))]))

# ----------------------------------------------------------------------------------------------
# User errors: each a DatasetError of one sentence naming the input.


def test_dataset_error_is_a_value_error():
    assert issubclass(DatasetError, ValueError)


def test_missing_path(tmp_path):
    path = str(tmp_path / 'nowhere.zip')
    assert_one_sentence(raise_message(ImageFolderDataset, path), path, 'does not exist')


def test_path_that_is_neither_folder_nor_zip(tmp_path):
    path = tmp_path / 'images.txt'
    path.write_text('hello')
    assert_one_sentence(raise_message(ImageFolderDataset, str(path)), str(path), 'neither a folder nor a .zip')


def test_corrupt_zip(tmp_path):
    path = tmp_path / 'broken.zip'
    path.write_bytes(b'this is not a zip archive')
    assert_one_sentence(raise_message(ImageFolderDataset, str(path)), str(path), 'Cannot read dataset zip')


def test_folder_without_images(tmp_path):
    (tmp_path / 'notes.txt').write_text('no images here')
    assert_one_sentence(raise_message(ImageFolderDataset, str(tmp_path)), str(tmp_path), 'No image files')


def test_zip_without_images(tmp_path):
    path = tmp_path / 'empty.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('dataset.json', '{"labels": null}')
    assert_one_sentence(raise_message(ImageFolderDataset, str(path)), str(path), 'No image files')


def test_resolution_mismatch(class_zip):
    message = raise_message(ImageFolderDataset, class_zip[0], resolution=16)
    assert_one_sentence(message, 'Image files do not match the specified resolution', 'img00000000.png', '8x8',
                        '16x16', class_zip[0])


def test_images_of_different_sizes(tmp_path):
    folder = write_folder(tmp_path, [random_images(1, [8, 8, 3])[0], random_images(1, [4, 4, 3])[0]])
    ds = ImageFolderDataset(folder)
    ds[0]
    assert_one_sentence(raise_message(ds.__getitem__, 1), 'img001.png', '[3, 4, 4]', '[3, 8, 8]')


def test_corrupt_image(tmp_path):
    folder = write_folder(tmp_path, random_images(1, [4, 4, 3]))
    (tmp_path / 'img001.png').write_bytes(b'\x89PNG garbage')
    ds = ImageFolderDataset(folder)
    assert_one_sentence(raise_message(ds.__getitem__, 1), 'img001.png', 'Cannot read image', 'remove or replace')
    # A corrupt first image fails at construction, inside a zip too.
    path = tmp_path / 'bad.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('a.png', b'not a png')
    assert_one_sentence(raise_message(ImageFolderDataset, str(path)), 'a.png', str(path))


def test_sixteen_bit_image(tmp_path):
    PIL.Image.fromarray(np.full([4, 4], 1000, dtype=np.uint16)).save(tmp_path / 'deep.png')
    assert_one_sentence(raise_message(ImageFolderDataset, str(tmp_path)), 'deep.png', '8-bit')


def test_non_square_resolution(tmp_path):
    ds = ImageFolderDataset(write_folder(tmp_path, random_images(1, [4, 8, 3])))
    assert ds.image_shape == [3, 4, 8]
    with pytest.raises(DatasetError) as info:
        ds.resolution
    assert_one_sentence(str(info.value), str(tmp_path), 'non-square', '8x4', '--transform=center-crop')


@pytest.mark.parametrize('labels', [None, {'labels': None}])
def test_use_labels_without_labels(tmp_path, labels):
    folder = write_folder(tmp_path / 'ds', random_images(1, [4, 4, 3]), labels)
    assert ImageFolderDataset(folder).label_dim == 0
    assert_one_sentence(raise_message(ImageFolderDataset, folder, use_labels=True), folder, 'no labels',
                        'dataset.json', 'without --cond')


def test_image_without_label(tmp_path):
    folder = write_folder(tmp_path, random_images(3, [4, 4, 3]), {'labels': [['img000.png', 0], ['img002.png', 1]]})
    assert_one_sentence(raise_message(ImageFolderDataset, folder, use_labels=True), 'img001.png', 'no label',
                        'dataset.json')


@pytest.mark.parametrize('text', ['{"labels": [["img000.png", 0]', '{"classes": []}', '{"labels": [1, 2]}', '[]',
                                  '{"labels": {"ab": 0}}', 'null'])
def test_malformed_dataset_json(tmp_path, text):
    folder = write_folder(tmp_path, random_images(1, [4, 4, 3]))
    (tmp_path / 'dataset.json').write_text(text)
    assert_one_sentence(raise_message(ImageFolderDataset, folder, use_labels=True), 'dataset.json', folder)


@pytest.mark.parametrize('labels, words', [
    ([[1.0, 2.0], [1.0, 2.0, 3.0]], ['img001.png', 'a list of 3 numbers', 'img000.png', 'a list of 2 numbers',
                                     'same kind and length']),
    ([0, [1.0]], ['img001.png', 'a list of 1 number ', 'img000.png', 'a class integer']),
    ([[1.0, 2.0], [1.0, 'x']], ['img001.png', 'neither a class integer nor a list of numbers']),
    ([1, -2], ['img001.png', 'negative']),
    ([True, False], ['img000.png', 'true', 'neither']),
])
def test_bad_labels(tmp_path, labels, words):
    names = ['img000.png', 'img001.png']
    folder = write_folder(tmp_path, random_images(2, [4, 4, 3]), {'labels': [[n, l] for n, l in zip(names, labels)]})
    assert_one_sentence(raise_message(ImageFolderDataset, folder, use_labels=True), *words)


def test_labels_are_found_in_a_zip_with_backslash_names(tmp_path):
    path = tmp_path / 'win.zip'
    images = random_images(2, [4, 4, 3])
    with zipfile.ZipFile(path, 'w') as archive:
        for i, image in enumerate(images):
            with archive.open(f'sub/img{i}.png', 'w') as f:
                PIL.Image.fromarray(image).save(f, format='png')
        archive.writestr('dataset.json', json.dumps({'labels': [['sub\\img0.png', 1], ['sub\\img1.png', 0]]}))
    ds = ImageFolderDataset(str(path), use_labels=True)
    np.testing.assert_array_equal(ds[0][1], [0, 1])
    np.testing.assert_array_equal(ds[1][0], chw(images[1]))


def test_max_size_must_be_positive(ten_images):
    assert_one_sentence(raise_message(ImageFolderDataset, ten_images[0], max_size=0), ten_images[0], 'max_size=0',
                        'at least 1')


def test_base_class_reports_wrong_image_shapes():
    class Shaky(Dataset):
        def _load_raw_image(self, raw_idx):
            return np.zeros([3, 4, 4 + raw_idx], dtype=np.uint8)

        def _load_raw_labels(self):
            return None

    ds = Shaky('shaky', [2, 3, 4, 4])
    assert ds[0][0].shape == (3, 4, 4)
    assert_one_sentence(raise_message(ds.__getitem__, 1), "Image #1 of dataset 'shaky'", '[3, 4, 5]')

# ----------------------------------------------------------------------------------------------
# Label values: finite numbers, and cameras that are cameras.


@pytest.mark.parametrize('value', [float('nan'), float('inf'), -float('inf')])
def test_non_finite_labels_are_refused_naming_the_image(tmp_path, value):
    labels = [[0.5, 1.0], [0.5, value], [0.5, 2.0]]
    folder = write_folder(tmp_path, random_images(3, [4, 4, 3]),
                          {'labels': [[f'img{i:03d}.png', label] for i, label in enumerate(labels)]})
    message = raise_message(ImageFolderDataset, folder, use_labels=True)
    assert_one_sentence(message, 'img001.png', folder, 'NaN or infinite', 'dataset.json')
    assert 'img000.png' not in message
    assert ImageFolderDataset(folder).label_dim == 0  # labels unused: nothing to check


def _camera_labels(count):
    return cameras.lookat_labels([0.2 * i for i in range(count)], [0.1] * count).tolist()


CORRUPTIONS = [
    (lambda c: [2 * v for v in c[:3]] + c[3:], ['cam2world rotation is not orthonormal']),             # non-rigid
    (lambda c: [0.0, 0.0, 0.0] + c[3:], ['cam2world rotation', 'its determinant is 0']),               # singular
    (lambda c: [-v for v in c[:3]] + c[3:], ['cam2world rotation', 'its determinant is -1']),           # a reflection
    (lambda c: c[:22] + [0.0, 0.0, 2.0], ['last intrinsics row must be (0, 0, 1), not (0, 0, 2)']),
]


@pytest.mark.parametrize('corrupt, words', CORRUPTIONS)
def test_a_camera_that_is_not_valid_among_cameras_is_named(tmp_path, corrupt, words):
    labels = _camera_labels(4)
    labels[2] = corrupt(labels[2])
    folder = write_folder(tmp_path, random_images(4, [4, 4, 3]),
                          {'labels': [[f'img{i:03d}.png', label] for i, label in enumerate(labels)]})
    message = raise_message(ImageFolderDataset, folder, use_labels=True)
    assert_one_sentence(message, 'img002.png', folder, 'not a valid camera', '3 other label(s)', *words)
    assert 'no labels' not in message


@pytest.mark.parametrize('corrupt, words', CORRUPTIONS)
def test_25_floats_that_are_never_cameras_are_a_vector_that_says_why(tmp_path, corrupt, words):
    labels = [corrupt(label) for label in _camera_labels(2)]
    folder = write_folder(tmp_path, random_images(2, [4, 4, 3]),
                          {'labels': [[f'img{i:03d}.png', label] for i, label in enumerate(labels)]})
    ds = ImageFolderDataset(folder, use_labels=True)
    assert ds.label_dim == 25 and not ds.has_camera_labels
    assert_one_sentence(ds.camera_label_problem + '.', 'img000.png', 'not a valid camera', *words)
    assert ImageFolderDataset(write_folder(tmp_path / 'ok', random_images(2, [4, 4, 3]), {'labels': [
        [f'img{i:03d}.png', label] for i, label in enumerate(_camera_labels(2))]}), use_labels=True).camera_label_problem is None
