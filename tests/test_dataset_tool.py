"""dataset_tool.py: every source kind, labels, transforms, alpha handling, errors and atomic output."""

import gzip
import io
import json
import math
import os
import pickle
import sys
import signal
import tarfile
import zipfile

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dataset_tool  # noqa: E402
from cli_checks import make_read_only, signal_when_ready  # noqa: E402


# ----------------------------------------------------------------------------------------------
# Helpers.

def run_tool(*args):
    result = CliRunner().invoke(dataset_tool.main, [str(a) for a in args])
    return result


def run_ok(*args):
    result = run_tool(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def assert_fails(tmp_path, dest, *args, words=()):
    """The CLI exits non-zero with one 'Error: ...' line naming `words`, no traceback, and no output
    (destination or temporary) left in `dest`'s folder."""
    before = set(os.listdir(os.path.dirname(dest)))
    result = run_tool(*args, '--dest', dest)
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    message = result.output.strip()
    assert 'Traceback' not in message
    assert len(message.splitlines()) == 1, message
    assert message.startswith('Error: ')
    for word in words:
        assert word in message, (word, message)
    assert not os.path.exists(dest)
    assert set(os.listdir(os.path.dirname(dest))) == before, 'temporary output left behind'
    return message


def random_image(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def save_image(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    PIL.Image.fromarray(array).save(path, **kwargs)


def read_zip_dataset(path):
    """-> (sorted image names, {name: uint8 array}, labels json)."""
    with zipfile.ZipFile(path) as archive:
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
        names = sorted(n for n in archive.namelist() if n.endswith('.png'))
        images = {n: np.array(PIL.Image.open(io.BytesIO(archive.read(n)))) for n in names}
        meta = json.loads(archive.read('dataset.json'))
    return names, images, meta


def read_folder_dataset(path):
    names = sorted(os.path.relpath(os.path.join(r, f), path).replace(os.sep, '/')
                   for r, _, files in os.walk(path) for f in files if f.endswith('.png'))
    images = {n: np.array(PIL.Image.open(os.path.join(path, n))) for n in names}
    with open(os.path.join(path, 'dataset.json')) as f:
        meta = json.load(f)
    return names, images, meta


def expected_names(count):
    return [f'{i // 1000:05d}/img{i:08d}.png' for i in range(count)]


@pytest.fixture
def image_folder(tmp_path):
    """Five 8x8 RGB images in nested folders with mixed extensions and a labels file (25 floats)."""
    root = tmp_path / 'src'
    files = {'a.png': 1, 'b/c.PNG': 2, 'b/d.webp': 3, 'e.jpg': 4, 'z/z/f.png': 5}
    arrays = {}
    for name, seed in files.items():
        arrays[name] = random_image((8, 8, 3), seed)
        kwargs = {'lossless': True} if name.endswith('.webp') else {}
        save_image(str(root / name), arrays[name], **kwargs)
    (root / 'notes.txt').write_text('not an image')
    cameras = {name: [float(seed) + k / 7 for k in range(25)] for name, seed in files.items()}
    (root / 'dataset.json').write_text(json.dumps({'labels': [[n, c] for n, c in reversed(cameras.items())]}))
    return root, arrays, cameras


# ----------------------------------------------------------------------------------------------
# Sources.

def test_image_folder_round_trip_rekeys_camera_labels(tmp_path, image_folder):
    root, arrays, cameras = image_folder
    dest = tmp_path / 'out.zip'
    result = run_ok('--source', root, '--dest', dest)
    assert 'Wrote 5 images, 8x8, 3 channel(s), labels: 25 floats' in result.output
    names, images, meta = read_zip_dataset(dest)
    assert names == expected_names(5)
    source_order = sorted(arrays)  # sorted by relative path: a.png, b/c.PNG, b/d.webp, e.jpg, z/z/f.png
    assert source_order == ['a.png', 'b/c.PNG', 'b/d.webp', 'e.jpg', 'z/z/f.png']
    for new_name, old_name in zip(names, source_order):
        if not old_name.endswith('.jpg'):
            np.testing.assert_array_equal(images[new_name], arrays[old_name])
        else:
            assert images[new_name].shape == (8, 8, 3)
    assert meta['labels'] == [[new, cameras[old]] for new, old in zip(names, source_order)]


def test_zip_source_with_int_labels_and_max_images(tmp_path):
    src = tmp_path / 'src.zip'
    arrays = {f'img{i}.png': random_image((4, 4), i) for i in range(6)}
    with zipfile.ZipFile(src, 'w') as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            PIL.Image.fromarray(array).save(buffer, format='png')
            archive.writestr(f'sub/{name}', buffer.getvalue())
        archive.writestr('dataset.json', json.dumps({'labels': [[f'sub/img{i}.png', 10 - i] for i in range(6)]}))
    dest = tmp_path / 'out.zip'
    result = run_ok('--source', src, '--dest', dest, '--max-images', 4)
    assert 'Wrote 4 images, 4x4, 1 channel(s), labels: class integers' in result.output
    names, images, meta = read_zip_dataset(dest)
    assert names == expected_names(4)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(images[name], arrays[f'img{i}.png'])
    assert meta == {'labels': [[name, 10 - i] for i, name in enumerate(names)]}


def make_cifar(path, batches):
    with tarfile.open(path, 'w:gz') as tar:
        for index, (data, labels) in enumerate(batches, start=1):
            payload = pickle.dumps({b'batch_label': b'x', b'data': data, b'labels': labels,
                                    b'filenames': [b'f'] * len(labels)}, protocol=2)  # as the original file
            info = tarfile.TarInfo(f'cifar-10-batches-py/data_batch_{index}')
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_cifar10_round_trip(tmp_path):
    images = random_image((5, 32, 32, 3), 7)
    data = images.transpose(0, 3, 1, 2).reshape(5, 3072)  # the CIFAR layout: all R, then G, then B
    src = tmp_path / 'cifar-10-python.tar.gz'
    make_cifar(src, [(data[:3], [3, 1, 4]), (data[3:], [1, 5])])
    dest = tmp_path / 'cifar.zip'
    result = run_ok('--source', src, '--dest', dest)
    assert 'Wrote 5 images, 32x32, 3 channel(s), labels: class integers' in result.output
    names, out, meta = read_zip_dataset(dest)
    assert names == expected_names(5)
    for i, name in enumerate(names):
        np.testing.assert_array_equal(out[name], images[i])
    assert meta['labels'] == [[n, c] for n, c in zip(names, [3, 1, 4, 1, 5])]


class _RunsCode:
    def __reduce__(self):
        return (os.system, ('echo executed',))


def test_cifar10_batches_cannot_run_code(tmp_path):
    src = tmp_path / 'cifar-10-python.tar.gz'
    with tarfile.open(src, 'w:gz') as tar:
        payload = pickle.dumps({b'data': _RunsCode(), b'labels': [0]})
        info = tarfile.TarInfo('cifar-10-batches-py/data_batch_1')
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', src, words=['CIFAR-10', 'posix.system'])


def write_idx(path, magic, array):
    header = np.array([magic, *array.shape], dtype='>i4').tobytes()
    with gzip.open(path, 'wb') as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize('with_labels', [True, False])
def test_mnist_round_trip_pads_to_32(tmp_path, with_labels):
    images = random_image((3, 28, 28), 3)
    src = tmp_path / 'train-images-idx3-ubyte.gz'
    write_idx(src, 2051, images)
    if with_labels:
        write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', 2049, np.array([7, 0, 9]))
    dest = tmp_path / 'mnist'
    result = run_ok('--source', src, '--dest', dest)
    assert '32x32, 1 channel(s)' in result.output
    names, out, meta = read_folder_dataset(dest)
    assert names == expected_names(3)
    for i, name in enumerate(names):
        assert out[name].shape == (32, 32)
        np.testing.assert_array_equal(out[name][2:30, 2:30], images[i])
        assert out[name].sum() == images[i].astype(np.int64).sum()  # zero padding
    assert meta['labels'] == ([[n, c] for n, c in zip(names, [7, 0, 9])] if with_labels else None)


def test_lsun_without_lmdb_says_how_to_install_it(tmp_path, monkeypatch):
    src = tmp_path / 'cat_lmdb'
    src.mkdir()
    monkeypatch.setitem(sys.modules, 'lmdb', None)  # makes `import lmdb` fail, as when it is not installed
    message = assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', src, words=['pip install lmdb'])
    assert 'cat_lmdb' in message


def test_lsun_round_trip(tmp_path):
    lmdb = pytest.importorskip('lmdb', reason='lmdb is in requirements.txt; install it to test the LSUN source')
    src = tmp_path / 'cat_lmdb'
    src.mkdir()
    arrays = [random_image((4, 4, 3), i) for i in range(3)]
    with lmdb.open(str(src), map_size=1 << 20) as env, env.begin(write=True) as txn:
        for i, array in enumerate(arrays):
            buffer = io.BytesIO()
            PIL.Image.fromarray(array).save(buffer, format='png')
            txn.put(f'key{i}'.encode(), buffer.getvalue())
    dest = tmp_path / 'out.zip'
    run_ok('--source', src, '--dest', dest, '--max-images', 2)
    names, out, meta = read_zip_dataset(dest)
    assert names == expected_names(2) and meta == {'labels': None}
    for i, name in enumerate(names):
        np.testing.assert_array_equal(out[name], arrays[i])


def test_synthetic_shapes_round_trip(tmp_path):
    dest = tmp_path / 'shapes.zip'
    result = run_ok('--source', 'synthetic:shapes', '--dest', dest, '--max-images', 3, '--resolution', '32x32', '--seed', 1)
    assert 'Wrote 3 images, 32x32, 3 channel(s), labels: 25 floats' in result.output
    assert 'images/s' in result.output
    names, out, meta = read_zip_dataset(dest)
    assert names == expected_names(3)
    assert all(image.shape == (32, 32, 3) for image in out.values())
    assert [entry[0] for entry in meta['labels']] == names
    assert all(len(entry[1]) == 25 for entry in meta['labels'])
    again = tmp_path / 'again.zip'
    run_ok('--source', 'synthetic:shapes', '--dest', again, '--max-images', 3, '--resolution', '32x32', '--seed', 1)
    assert again.read_bytes() == dest.read_bytes()  # same seed, same bytes


def test_synthetic_needs_max_images(tmp_path):
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', 'synthetic:shapes', words=['--max-images'])


def test_folder_destination_and_many_images_per_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(dataset_tool, 'IMAGES_PER_FOLDER', 2)
    root = tmp_path / 'src'
    for i in range(5):
        save_image(str(root / f'{i}.png'), random_image((4, 4, 3), i))
    dest = tmp_path / 'deep' / 'out'
    run_ok('--source', root, '--dest', dest)
    names, _, meta = read_folder_dataset(dest)
    assert names == ['00000/img00000000.png', '00000/img00000001.png', '00001/img00000002.png',
                     '00001/img00000003.png', '00002/img00000004.png']
    assert meta == {'labels': None}
    assert sorted(os.listdir(tmp_path / 'deep')) == ['out']


# ----------------------------------------------------------------------------------------------
# Transforms, filters, alpha.

def test_resize_filters_box_is_block_mean(tmp_path):
    root = tmp_path / 'src'
    array = random_image((16, 16, 3), 11)
    save_image(str(root / 'a.png'), array)
    for resize_filter in ['box', 'lanczos']:
        dest = tmp_path / f'{resize_filter}.zip'
        run_ok('--source', root, '--dest', dest, '--resolution', '4x4', '--resize-filter', resize_filter)
        _, out, _ = read_zip_dataset(dest)
        (image,) = out.values()
        assert image.shape == (4, 4, 3)
        if resize_filter == 'box':
            # PIL resamples horizontally then vertically, rounding to 8 bits in between.
            rows = np.floor(array.reshape(16, 4, 4, 3).mean(axis=2) + 0.5)
            oracle = np.floor(rows.reshape(4, 4, 4, 3).mean(axis=1) + 0.5).astype(np.uint8)
            np.testing.assert_array_equal(image, oracle)
            exact = array.reshape(4, 4, 4, 4, 3).mean(axis=(1, 3))
            assert np.abs(image - exact).max() <= 1
            box = image
        else:
            assert not np.array_equal(image, box)


def test_center_crop(tmp_path):
    root = tmp_path / 'src'
    array = random_image((8, 12, 3), 5)
    save_image(str(root / 'wide.png'), array)
    dest = tmp_path / 'crop.zip'
    run_ok('--source', root, '--dest', dest, '--transform', 'center-crop')
    _, out, _ = read_zip_dataset(dest)
    np.testing.assert_array_equal(next(iter(out.values())), array[:, 2:10])
    dest = tmp_path / 'crop4.zip'
    run_ok('--source', root, '--dest', dest, '--transform', 'center-crop', '--resolution', '4x4', '--resize-filter', 'box')
    _, out, _ = read_zip_dataset(dest)
    expected = np.array(PIL.Image.fromarray(array[:, 2:10]).resize((4, 4), PIL.Image.Resampling.BOX))
    np.testing.assert_array_equal(next(iter(out.values())), expected)


def test_center_crop_wide_letterboxes(tmp_path):
    root = tmp_path / 'src'
    array = random_image((12, 16, 3), 6)
    save_image(str(root / 'a.png'), array)
    dest = tmp_path / 'wide.zip'
    run_ok('--source', root, '--dest', dest, '--transform', 'center-crop-wide', '--resolution', '8x8', '--resize-filter', 'box')
    _, out, _ = read_zip_dataset(dest)
    image = next(iter(out.values()))
    assert image.shape == (8, 8, 3)
    content = np.array(PIL.Image.fromarray(array[2:10]).resize((8, 4), PIL.Image.Resampling.BOX))  # centred 16x8 = 2:1
    np.testing.assert_array_equal(image[2:6], content)
    assert image[:2].max() == 0 and image[6:].max() == 0
    dest = tmp_path / 'wide43.zip'
    run_ok('--source', root, '--dest', dest, '--transform', 'center-crop-wide', '--resolution', '8x6')
    _, out, _ = read_zip_dataset(dest)
    image = next(iter(out.values()))
    assert image.shape == (8, 8, 3) and image[:1].max() == 0 and image[7:].max() == 0


def make_rgba_folder(tmp_path):
    root = tmp_path / 'src'
    rgba = random_image((4, 4, 4), 9)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    save_image(str(root / 'a.png'), rgba)
    return root, rgba


def test_rgba_requires_alpha_option(tmp_path):
    root, _ = make_rgba_folder(tmp_path)
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['a.png', 'alpha', '--alpha=drop', '--alpha=composite'])


def test_rgba_drop_and_composite(tmp_path):
    root, rgba = make_rgba_folder(tmp_path)
    run_ok('--source', root, '--dest', tmp_path / 'drop.zip', '--alpha', 'drop')
    _, out, _ = read_zip_dataset(tmp_path / 'drop.zip')
    np.testing.assert_array_equal(next(iter(out.values())), rgba[:, :, :3])
    run_ok('--source', root, '--dest', tmp_path / 'comp.zip', '--alpha', 'composite', '--background', '10,200,30')
    _, out, _ = read_zip_dataset(tmp_path / 'comp.zip')
    alpha = rgba[:, :, 3:] / 255.0
    oracle = np.round(rgba[:, :, :3] * alpha + np.array([10, 200, 30]) * (1 - alpha)).astype(np.uint8)
    image = next(iter(out.values()))
    np.testing.assert_array_equal(image, oracle)
    assert tuple(image[0, 0]) == (10, 200, 30) and tuple(image[0, 1]) == tuple(rgba[0, 1, :3])


# ----------------------------------------------------------------------------------------------
# Errors and atomic output.

def test_error_no_images(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', tmp_path / 'empty', words=['No images', 'empty'])


def test_error_mixed_sizes(tmp_path):
    root = tmp_path / 'src'
    save_image(str(root / 'a.png'), random_image((8, 8, 3)))
    save_image(str(root / 'b.png'), random_image((4, 4, 3)))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['a.png', '8x8', 'b.png', '4x4', '--resolution'])
    run_ok('--source', root, '--dest', tmp_path / 'ok.zip', '--resolution', '4x4')


def test_error_mixed_channels(tmp_path):
    root = tmp_path / 'src'
    save_image(str(root / 'a.png'), random_image((4, 4, 3)))
    save_image(str(root / 'b.png'), random_image((4, 4)))
    assert_fails(tmp_path, str(tmp_path / 'out'), '--source', root, words=['b.png', 'channel'])


def test_error_undecodable_file_leaves_nothing(tmp_path):
    root = tmp_path / 'src'
    for i in range(3):
        save_image(str(root / f'{i}.png'), random_image((4, 4, 3), i))
    (root / '3.png').write_bytes(b'not a png at all')
    for dest in ['out.zip', 'out']:
        assert_fails(tmp_path, str(tmp_path / dest), '--source', root, words=['3.png', 'decode'])


@pytest.mark.parametrize('size, resolution', [((6, 6, 3), None), ((4, 8, 3), None), ((4, 4, 3), '8x4'), ((4, 4, 3), '12x12')])
def test_error_output_not_square_power_of_two(tmp_path, size, resolution):
    root = tmp_path / 'src'
    save_image(str(root / 'a.png'), random_image(size))
    args = ['--source', root] + (['--resolution', resolution] if resolution else [])
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), *args, words=['square power of two'])


def test_error_missing_label(tmp_path, image_folder):
    root, _, cameras = image_folder
    labels = [[n, c] for n, c in cameras.items() if n != 'e.jpg']
    (root / 'dataset.json').write_text(json.dumps({'labels': labels}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['e.jpg', 'no label'])


def test_error_unknown_source_kind(tmp_path):
    (tmp_path / 'data.csv').write_text('1,2')
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', tmp_path / 'data.csv', words=['Unknown source', 'data.csv'])
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', tmp_path / 'missing', words=['does not exist'])
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', 'synthetic:blobs', '--max-images', 2, words=['synthetic:blobs'])


def test_error_bad_options(tmp_path, image_folder):
    root, _, _ = image_folder
    dest = str(tmp_path / 'out.zip')
    assert_fails(tmp_path, dest, '--source', root, '--transform', 'zoom', words=['--transform', 'zoom', 'center-crop'])
    assert_fails(tmp_path, dest, '--source', root, '--resolution', '256', words=['--resolution', 'WxH'])
    assert_fails(tmp_path, dest, '--source', root, '--resolution', 'axb', words=['--resolution'])
    assert_fails(tmp_path, dest, '--source', root, '--resize-filter', 'bicubic', words=['--resize-filter'])
    assert_fails(tmp_path, dest, '--source', root, '--alpha', 'keep', words=['--alpha'])
    assert_fails(tmp_path, dest, '--source', root, '--alpha', 'composite', '--background', 'red', words=['--background'])
    assert_fails(tmp_path, dest, '--source', root, '--max-images', 0, words=['--max-images'])


@pytest.mark.parametrize('resolution', ['100000x100000', '131072x131072'])
def test_error_resolution_beyond_the_limit(tmp_path, image_folder, resolution):
    """dnnlib.cli.check_image_size while parsing the options, instead of running out of memory resizing."""
    root, _, _ = image_folder
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--resolution', resolution,
                 words=['--resolution', resolution, '16384 pixels per side'])


def test_error_dest_under_a_file(tmp_path, image_folder):
    """dnnlib.cli.check_output_path before any image is read (it was a NotADirectoryError traceback)."""
    root, _, _ = image_folder
    (tmp_path / 'file').write_text('x')
    for dest in (tmp_path / 'file' / 'out.zip', tmp_path / 'file' / 'sub' / 'out'):
        result = run_tool('--source', root, '--dest', dest)
        assert result.exit_code == 1 and 'Traceback' not in result.output, result.output
        message = result.output.strip()
        assert message == (f'Error: --dest={dest} lies under {tmp_path / "file"}, which is a file, not a folder; '
                           f'pass a path outside it as --dest.')
    assert (tmp_path / 'file').read_text() == 'x'


@pytest.mark.parametrize('dest_name', ['out.zip', 'out'])
def test_error_dest_in_a_read_only_folder(tmp_path, image_folder, monkeypatch, dest_name):
    root, _, _ = image_folder
    (tmp_path / 'locked').mkdir()
    locked = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    assert_fails(tmp_path, str(locked / dest_name), '--source', root, words=[f'--dest={locked / dest_name}', 'not writable'])


@pytest.mark.parametrize('dest_name', ['out.zip', 'out'])
def test_refuses_to_overwrite(tmp_path, image_folder, dest_name):
    root, _, _ = image_folder
    dest = tmp_path / dest_name
    if dest_name.endswith('.zip'):
        dest.write_bytes(b'precious')
    else:
        dest.mkdir()
        (dest / 'keep.txt').write_text('precious')
    before = set(os.listdir(tmp_path))
    result = run_tool('--source', root, '--dest', dest)
    assert result.exit_code != 0
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and 'already exists' in message and 'Traceback' not in message
    assert set(os.listdir(tmp_path)) == before
    if dest_name.endswith('.zip'):
        assert dest.read_bytes() == b'precious'
    else:
        assert os.listdir(dest) == ['keep.txt']


def test_ctrl_c_removes_temporary_output(tmp_path, image_folder, monkeypatch):
    root, _, _ = image_folder
    calls = []

    def interrupted(image):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return b'png'
    monkeypatch.setattr(dataset_tool, 'encode_png', interrupted)
    for dest in ['out.zip', 'out']:
        calls.clear()
        result = run_tool('--source', root, '--dest', tmp_path / dest)
        assert result.exit_code == 130
        assert result.output.strip() == 'Interrupted.' and 'Traceback' not in result.output
        assert os.listdir(tmp_path) == ['src']


def test_zip_output_is_deterministic(tmp_path, image_folder):
    root, _, _ = image_folder
    run_ok('--source', root, '--dest', tmp_path / 'a.zip')
    run_ok('--source', root, '--dest', tmp_path / 'b.zip')
    assert (tmp_path / 'a.zip').read_bytes() == (tmp_path / 'b.zip').read_bytes()


def test_help_documents_every_option():
    result = run_ok('--help')
    for option in ['--source', '--dest', '--max-images', '--transform', '--resolution', '--resize-filter',
                   '--alpha', '--background', '--seed', 'center-crop-wide', 'lanczos', 'synthetic:shapes',
                   'python dataset_tool.py']:
        assert option in result.output


def test_error_malformed_dataset_json(tmp_path, image_folder):
    root, _, _ = image_folder
    (root / 'dataset.json').write_text('{"labels": 5}')
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['dataset.json'])
    (root / 'dataset.json').write_text(json.dumps({'labels': [['a.png', 1], ['b/c.PNG', [1.0, 2.0]]]}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--transform', 'none', words=['c.PNG', 'same kind'])


def test_subprocess_error_is_one_line_without_traceback(tmp_path):
    import subprocess
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'dataset_tool.py')
    result = subprocess.run([sys.executable, script, '--source', str(tmp_path / 'nothing'), '--dest', str(tmp_path / 'o.zip')],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout == '' and result.stderr.count('\n') == 1
    assert result.stderr.startswith('Error: ') and 'does not exist' in result.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(not hasattr(os, 'mkfifo'), reason='needs named pipes')
@pytest.mark.parametrize('signum, dest_name', [(signal.SIGTERM, 'out.zip'), (signal.SIGTERM, 'out'),
                                               (signal.SIGINT, 'out.zip')])
def test_stop_signal_while_writing_removes_the_temporary_output(tmp_path, signum, dest_name):
    """A real signal while the tool writes: the second image is a named pipe that nobody writes, so the tool
    waits on it with its hidden temporary output open until the signal comes."""
    root = tmp_path / 'src'
    save_image(str(root / 'a.png'), random_image((4, 4, 3)))
    os.mkfifo(root / 'b.png')
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'dataset_tool.py')
    returncode, out, err = signal_when_ready(
        [sys.executable, script, '--source', str(root), '--dest', str(tmp_path / dest_name)],
        lambda: any(name.startswith(f'.{dest_name}.') for name in os.listdir(tmp_path)), signum, timeout=60)
    assert returncode == 128 + signum, (returncode, err)
    assert 'Traceback' not in err and out == ''
    assert err.strip() == ('Interrupted.' if signum == signal.SIGINT else 'Interrupted by SIGTERM.')
    assert sorted(os.listdir(tmp_path)) == ['src'], 'temporary output left behind'


@pytest.mark.parametrize('value', ['NaN', 'Infinity', '-Infinity', '1e999'])
def test_error_non_finite_label(tmp_path, image_folder, value):
    root, arrays, _ = image_folder
    text = json.dumps({'labels': [[name, [1.0, 2.0]] for name in sorted(arrays)]})
    (root / 'dataset.json').write_text(text.replace('["e.jpg", [1.0, 2.0]]', f'["e.jpg", [1.0, {value}]]'))
    message = assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['e.jpg', 'NaN or infinite'])
    assert 'no label' not in message


def _valid_cameras(count):
    from training import cameras
    return cameras.lookat_labels([0.1 * i for i in range(count)], [0.0] * count).tolist()


@pytest.mark.parametrize('corrupt, words', [
    (lambda c: [2 * v for v in c[:3]] + c[3:], ['cam2world rotation is not orthonormal']),  # a non-rigid rotation
    (lambda c: [0.0] * 3 + [c[3]] + c[4:], ['cam2world rotation', 'determinant is 0']),  # singular: a zero row
    (lambda c: c[:24] + [2.0], ['last intrinsics row must be (0, 0, 1)']),
])
def test_error_25_float_labels_with_one_that_is_not_a_valid_camera(tmp_path, image_folder, corrupt, words):
    root, _, _ = image_folder
    names = ['a.png', 'b/c.PNG', 'b/d.webp', 'e.jpg', 'z/z/f.png']
    labels = _valid_cameras(5)
    labels[3] = corrupt(labels[3])
    (root / 'dataset.json').write_text(json.dumps({'labels': [[n, c] for n, c in zip(names, labels)]}))
    message = assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root,
                           words=['e.jpg', 'not a valid camera', *words])
    assert 'no label' not in message and 'missing' not in message


# ----------------------------------------------------------------------------------------------
# EpiGRAF's camera_angles: to 25-float camera labels, and back with --export-camera-angles.

EPIGRAF_ANGLES = {'a.png': [0.3, 1.4, 0.0], 'b/c.PNG': [-0.5, 1.7, 0.004], 'b/d.webp': [0.0, math.pi / 2, 0.0],
                  'e.jpg': [-0.1, 1.2, -0.002], 'z/z/f.png': [0.25, 1.9, 0.0]}


def _epigraf_labels(angles, fov=12, radius=1.0):
    from training import cameras
    return cameras.epigraf_angles_to_label(angles, fov, radius=radius).tolist()


@pytest.mark.parametrize('labels_key', ['absent', 'null'])
def test_epigraf_camera_angles_become_camera_labels(tmp_path, image_folder, labels_key):
    root, _, _ = image_folder
    meta = {'camera_angles': dict(reversed(EPIGRAF_ANGLES.items()))}
    if labels_key == 'null':
        meta['labels'] = None
    (root / 'dataset.json').write_text(json.dumps(meta))
    dest = tmp_path / 'out.zip'
    result = run_ok('--source', root, '--dest', dest)
    assert 'labels: 25 floats' in result.output
    names, _, meta = read_zip_dataset(dest)
    order = sorted(EPIGRAF_ANGLES)
    assert [entry[0] for entry in meta['labels']] == names
    np.testing.assert_allclose([entry[1] for entry in meta['labels']],
                               _epigraf_labels([EPIGRAF_ANGLES[n] for n in order]), atol=1e-7)
    assert 'camera_angles' not in meta
    # The frontal image (yaw 0, pitch pi/2) gets GRAM's frontal camera on +z: R = diag(1, -1, -1), t = (0, 0, 1).
    frontal = np.array(meta['labels'][order.index('b/d.webp')][1][:16]).reshape(4, 4)
    np.testing.assert_allclose(frontal, [[1, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 1], [0, 0, 0, 1]], atol=1e-6)
    # --fov and --radius set the intrinsics and the distance.
    dest = tmp_path / 'wide.zip'
    run_ok('--source', root, '--dest', dest, '--fov', 30, '--radius', 2.7)
    _, _, meta = read_zip_dataset(dest)
    np.testing.assert_allclose([entry[1] for entry in meta['labels']],
                               _epigraf_labels([EPIGRAF_ANGLES[n] for n in order], 30, 2.7), atol=1e-6)
    assert meta['labels'][0][1][16] == pytest.approx(1 / (2 * math.tan(math.radians(15))), rel=1e-6)


def test_epigraf_camera_angles_from_a_zip_source_and_per_image_labels_win(tmp_path, image_folder):
    root, _, cameras = image_folder
    src = tmp_path / 'src.zip'
    with zipfile.ZipFile(src, 'w') as archive:
        for name in EPIGRAF_ANGLES:
            archive.write(root / name, name)
        archive.writestr('dataset.json', json.dumps({'camera_angles': EPIGRAF_ANGLES}))
    run_ok('--source', src, '--dest', tmp_path / 'out.zip')
    _, _, meta = read_zip_dataset(tmp_path / 'out.zip')
    np.testing.assert_allclose([entry[1] for entry in meta['labels']],
                               _epigraf_labels([EPIGRAF_ANGLES[n] for n in sorted(EPIGRAF_ANGLES)]), atol=1e-7)
    # A dataset.json with both keeps its per-image labels (our own --export-camera-angles output has both).
    (root / 'dataset.json').write_text(json.dumps({'labels': [[n, c] for n, c in cameras.items()],
                                                   'camera_angles': EPIGRAF_ANGLES}))
    run_ok('--source', root, '--dest', tmp_path / 'both.zip')
    _, _, meta = read_zip_dataset(tmp_path / 'both.zip')
    assert [entry[1] for entry in meta['labels']] == [cameras[n] for n in sorted(cameras)]


def test_epigraf_refuses_yaws_that_are_not_zero_centred(tmp_path, image_folder):
    root, _, _ = image_folder
    gram_azimuths = {name: [yaw + math.pi / 2, pitch, roll] for name, (yaw, pitch, roll) in EPIGRAF_ANGLES.items()}
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': gram_azimuths}))
    for dest in ['out.zip', 'out']:
        message = assert_fails(tmp_path, str(tmp_path / dest), '--source', root,
                               words=['yaws of', 'dataset.json', 'average 1.56', 'zero-centred', 'subtract pi/2'])
        assert str(root / 'dataset.json') in message
    # A lopsided but zero-centred set (mean 0.9 rad) passes.
    lopsided = {name: [0.9 + 0.1 * k, 1.5, 0.0] for k, name in enumerate(['a.png', 'b/c.PNG', 'e.jpg'])}
    lopsided.update({'b/d.webp': [0.9, 1.5, 0.0], 'z/z/f.png': [0.6, 1.5, 0.0]})
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': lopsided}))
    run_ok('--source', root, '--dest', tmp_path / 'ok.zip')


@pytest.mark.parametrize('bad, words', [
    ([0.1, 1.5, 0.05], ['e.jpg', 'roll 0.05', 'no roll']),
    ([0.1, 0.0, 0.0], ['e.jpg', 'pitch 0', 'between 0 and pi']),
    ([0.1, 3.5, 0.0], ['e.jpg', 'pitch 3.5']),
    ([0.1, 1.5], ['e.jpg', 'three finite numbers']),
    ([0.1, 'x', 0.0], ['e.jpg', 'three finite numbers']),
])
def test_epigraf_refuses_bad_camera_angles(tmp_path, image_folder, bad, words):
    root, _, _ = image_folder
    angles = dict(EPIGRAF_ANGLES, **{'e.jpg': bad})
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': angles}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=words)


def test_epigraf_errors_missing_entry_and_bad_options(tmp_path, image_folder):
    root, _, _ = image_folder
    angles = {n: a for n, a in EPIGRAF_ANGLES.items() if n != 'e.jpg'}
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': angles}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['e.jpg', 'no label'])
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': [[0.0, 1.5, 0.0]]}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, words=['camera_angles', 'list'])
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': EPIGRAF_ANGLES}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--fov', 0, words=['--fov=0'])
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--fov', 'nan', words=['--fov=nan'])
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--radius', -1, words=['--radius=-1'])


@pytest.mark.parametrize('dest_name', ['out.zip', 'out'])
def test_export_camera_angles_round_trip(tmp_path, image_folder, dest_name):
    root, _, _ = image_folder
    (root / 'dataset.json').write_text(json.dumps({'camera_angles': EPIGRAF_ANGLES}))
    dest = tmp_path / dest_name
    run_ok('--source', root, '--dest', dest, '--export-camera-angles')
    names, _, meta = (read_zip_dataset if dest_name.endswith('.zip') else read_folder_dataset)(dest)
    assert list(meta) == ['labels', 'camera_angles']
    assert sorted(meta['camera_angles']) == names  # keyed by the new names
    for new, old in zip(names, sorted(EPIGRAF_ANGLES)):
        yaw, pitch, roll = meta['camera_angles'][new]
        assert yaw == pytest.approx(EPIGRAF_ANGLES[old][0], abs=1e-6)
        assert pitch == pytest.approx(EPIGRAF_ANGLES[old][1], abs=1e-6)
        assert roll == 0
    # Packing the output again keeps its labels, and re-exports the same angles.
    again = tmp_path / f'again-{dest_name}'
    run_ok('--source', dest, '--dest', again, '--export-camera-angles')
    _, _, again_meta = (read_zip_dataset if dest_name.endswith('.zip') else read_folder_dataset)(again)
    assert again_meta['labels'] == meta['labels']
    for name, angle in meta['camera_angles'].items():
        np.testing.assert_allclose(again_meta['camera_angles'][name], angle, atol=1e-6)


def test_export_camera_angles_of_eg3d_style_labels_and_synthetic_shapes(tmp_path, image_folder):
    import torch
    from training import cameras
    root, _, _ = image_folder
    names = sorted(EPIGRAF_ANGLES)
    labels = _valid_cameras(5)  # EG3D's lookat_labels at yaw 0.1 k from frontal, on a 2.7 sphere
    (root / 'dataset.json').write_text(json.dumps({'labels': [[n, c] for n, c in zip(names, labels)]}))
    run_ok('--source', root, '--dest', tmp_path / 'out.zip', '--export-camera-angles')
    out_names, _, meta = read_zip_dataset(tmp_path / 'out.zip')
    expected = cameras.epigraf_angles_from_label(torch.tensor(labels, dtype=torch.float64)).tolist()
    np.testing.assert_allclose([meta['camera_angles'][n] for n in out_names], expected, atol=1e-6)
    assert meta['camera_angles'][out_names[0]][0] == pytest.approx(0, abs=1e-3)  # frontal: yaw about 0
    run_ok('--source', 'synthetic:shapes', '--dest', tmp_path / 'shapes.zip', '--max-images', 2,
           '--resolution', '16x16', '--export-camera-angles')
    _, _, meta = read_zip_dataset(tmp_path / 'shapes.zip')
    assert len(meta['camera_angles']) == 2 and all(len(a) == 3 for a in meta['camera_angles'].values())


def test_export_camera_angles_needs_camera_labels(tmp_path, image_folder):
    root, _, cameras = image_folder
    # image_folder's labels are 25 floats that are no cameras at all.
    for dest in ['out.zip', 'out']:
        assert_fails(tmp_path, str(tmp_path / dest), '--source', root, '--export-camera-angles',
                     words=['--export-camera-angles', 'image #0', 'not a valid camera'])
    (root / 'dataset.json').write_text(json.dumps({'labels': [[n, 1] for n in cameras]}))
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--export-camera-angles',
                 words=['--export-camera-angles', 'class integers'])
    (root / 'dataset.json').unlink()
    assert_fails(tmp_path, str(tmp_path / 'out.zip'), '--source', root, '--export-camera-angles',
                 words=['--export-camera-angles', 'no labels'])


def test_help_documents_the_epigraf_options():
    result = run_ok('--help')
    for text in ['--fov', '--radius', '--export-camera-angles', 'camera_angles', 'zero-centred']:
        assert text in result.output
