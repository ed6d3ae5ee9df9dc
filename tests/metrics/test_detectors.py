"""The FID Inception-v3 and VGG16 detectors and load_detector, with random weights (no downloads)."""

import json
import math
import os
import pickle
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dnnlib.util
from metrics import detectors

# The names and shapes of pytorch-fid's Inception state_dict (pt_inception-2015-12-05-6726825d.pth), as its
# `about` field says.
SPEC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'spec',
                         'fid_inception_state_dict.json')

# torchvision's VGG16 layout: conv layers inside `features`, linear layers inside `classifier`.
VGG16_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
VGG16_STAGE_OF_CONV = (0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4)


def _spec_tensors():
    with open(SPEC_PATH) as f:  # Fails (not skips) when the spec is missing.
        spec = json.load(f)
    assert len(spec['tensors']) == spec['num_tensors'] == 472
    return spec['tensors']


def _random_inception_state_dict(seed=0):
    """Random values with the spec's names and shapes, scaled so activations stay O(1)."""
    gen = torch.Generator().manual_seed(seed)
    state_dict = {}
    for name, shape in _spec_tensors().items():
        if name.endswith('conv.weight'):
            fan_in = shape[1] * shape[2] * shape[3]
            value = torch.randn(shape, generator=gen) * math.sqrt(2 / fan_in)
        elif name.endswith('bn.weight'):
            value = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith(('bn.bias', 'bn.running_mean')):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif name.endswith('bn.running_var'):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif name == 'fc.weight':
            value = torch.randn(shape, generator=gen) / math.sqrt(shape[1])
        else:
            assert name == 'fc.bias'
            value = torch.randn(shape, generator=gen)  # Large, so that dropping it is visible.
        state_dict[name] = value
    return state_dict


def _with_num_batches_tracked(state_dict):
    result = dict(state_dict)
    for name in state_dict:
        if name.endswith('.bn.running_var'):
            result[name.replace('running_var', 'num_batches_tracked')] = torch.tensor(0)
    return result


def _assert_one_sentence(message, *words):
    assert '\n' not in message and message.endswith('.'), message
    for word in words:
        assert word in message, (word, message)


@pytest.fixture(autouse=True)
def fresh_detector_cache(monkeypatch):
    monkeypatch.setattr(detectors, '_detector_cache', {})


@pytest.fixture(scope='module')
def inception_files(tmp_path_factory):
    """The same random weights saved with and without num_batches_tracked entries."""
    folder = tmp_path_factory.mktemp('inception')
    state_dict = _random_inception_state_dict()
    plain, tracked = str(folder / 'plain.pth'), str(folder / 'tracked.pth')
    torch.save(state_dict, plain)
    torch.save(_with_num_batches_tracked(state_dict), tracked)
    return state_dict, plain, tracked


@pytest.fixture(scope='module')
def inception(inception_files):
    return detectors.FIDInceptionV3.from_state_dict(inception_files[0])


# ----------------------------------------------------------------------------------------------
# Structure and loading.


def test_state_dict_has_exactly_the_spec_names_and_shapes():
    with torch.device('meta'):
        model = detectors.FIDInceptionV3()
    ours = {name: list(value.shape) for name, value in model.state_dict().items()}
    assert ours == _spec_tensors()
    assert model.Conv2d_1a_3x3.bn.eps == 1e-3
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_load_detector_reads_the_state_dict_with_and_without_num_batches_tracked(inception_files):
    state_dict, plain, tracked = inception_files
    images = torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    detector = detectors.load_detector(plain)
    assert isinstance(detector, detectors.FIDInceptionV3)
    assert detectors.load_detector(plain, device='cpu') is detector  # Cached per (path, device).
    other = detectors.load_detector(tracked)
    assert other is not detector
    for name, value in other.state_dict().items():
        assert torch.equal(value, state_dict[name]), name
    features = detector(images, return_features=True)
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all() and (features >= 0).all() and features.std() > 0
    probabilities = detector(images[:1])
    assert probabilities.shape == (1, 1008)
    assert (probabilities >= 0).all() and abs(probabilities.double().sum().item() - 1) < 1e-5


@pytest.mark.parametrize('corrupt, words', [
    (lambda sd: sd.pop('Mixed_6c.branch7x7_2.conv.weight'), ['lacks', 'Mixed_6c.branch7x7_2.conv.weight']),
    (lambda sd: sd.update({'Mixed_7c.branch_pool.bn.bias': torch.zeros(191)}),
     ['Mixed_7c.branch_pool.bn.bias', '[191]', '[192]']),
    (lambda sd: sd.update({'fc.weight': torch.zeros(1000, 2048)}), ['fc.weight', '[1000, 2048]', '[1008, 2048]']),
    (lambda sd: sd.update({'AuxLogits.fc.weight': torch.zeros(1008, 768)}), ['unexpected', 'AuxLogits.fc.weight']),
    (lambda sd: sd.update({'fc.bias': torch.zeros(1008, dtype=torch.int64)}), ['fc.bias', 'floating-point']),
])
def test_a_wrong_state_dict_gives_one_sentence_naming_the_key(inception_files, corrupt, words):
    state_dict = dict(inception_files[0])
    corrupt(state_dict)
    with pytest.raises(detectors.DetectorError) as info:
        detectors.FIDInceptionV3.from_state_dict(state_dict)
    _assert_one_sentence(str(info.value), 'Inception', *words)


def test_a_wrong_state_dict_file_is_named(tmp_path):
    path = str(tmp_path / 'wrong.pth')
    torch.save({'Conv2d_1a_3x3.conv.weight': torch.zeros(32, 3, 3, 3)}, path)
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(path)
    _assert_one_sentence(str(info.value), path, 'lacks', 'Conv2d_1a_3x3.bn.weight')

    torch.save({'encoder.weight': torch.zeros(3)}, path)
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(path)
    _assert_one_sentence(str(info.value), path, 'encoder.weight', 'neither')


def test_other_files_give_one_sentence(tmp_path):
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(missing)
    _assert_one_sentence(str(info.value), missing, 'does not exist')

    text = tmp_path / 'notes.txt'
    text.write_text('not a network')
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(str(text))
    _assert_one_sentence(str(info.value), str(text), 'neither')

    # A torch.save file holding more than tensors is refused by weights_only, not unpickled.
    objects = str(tmp_path / 'objects.pth')
    torch.save({'model': torch.nn.Linear(2, 2)}, objects)
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(objects)
    _assert_one_sentence(str(info.value), objects, 'not a plain state_dict')


# ----------------------------------------------------------------------------------------------
# Preprocessing.


def _tf1_weights(in_size, out_size):
    """Closed form of TF1 resize_bilinear along one axis: [out, in] interpolation matrix in float64.

    TF computes the source coordinate j * (in / out) in float32; so does this reference.
    """
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    scale = np.float32(in_size) / np.float32(out_size)
    for j in range(out_size):
        coord = float(np.float32(j) * scale)
        lower = math.floor(coord)
        frac = coord - lower
        matrix[j, lower] += 1 - frac
        matrix[j, min(lower + 1, in_size - 1)] += frac
    return matrix


def test_resize_matches_tf1_bilinear_by_hand():
    image = torch.tensor([[10.0, 20.0], [30.0, 70.0]]).view(1, 1, 2, 2)
    # 2 -> 5: sources at 0, 0.4, 0.8, 1.2, 1.6; the last two clamp to pixel 1.
    weights = torch.tensor([[1.0, 0.0], [0.6, 0.4], [0.2, 0.8], [0.0, 1.0], [0.0, 1.0]])
    expected = weights @ image[0, 0] @ weights.T
    assert torch.allclose(detectors.resize_bilinear_tf1(image, 5, 5)[0, 0], expected, atol=1e-5)
    assert abs(expected[1, 1].item() - (0.6 * 0.6 * 10 + 0.6 * 0.4 * 20 + 0.4 * 0.6 * 30 + 0.4 * 0.4 * 70)) < 1e-4

    # 3 -> 299 at a few pixels: output j samples 3j/299.
    image = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3) ** 2
    out = detectors.resize_bilinear_tf1(image, 299, 299)[0, 0].double()
    rows, cols = _tf1_weights(3, 299), _tf1_weights(3, 299)
    reference = rows @ image[0, 0].double() @ cols.T
    for i, j in [(0, 0), (1, 2), (50, 150), (99, 100), (100, 199), (200, 298), (298, 298)]:
        assert abs(out[i, j].item() - reference[i, j].item()) < 1e-4, (i, j)
    assert out[298, 298].item() == 64.0 and out[0, 0].item() == 0.0


def test_resize_equals_nvidia_grid_sample_construction_and_is_identity_at_299():
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 37, 530, generator=gen) * 255
    # NVIDIA's detector: identity affine grid shifted by 1/in - 1/out, bilinear, border padding.
    theta = torch.tensor([[1, 0, 1 / 530 - 1 / 299], [0, 1, 1 / 37 - 1 / 299]], dtype=torch.float32)
    grid = F.affine_grid(theta.expand(2, 2, 3), [2, 3, 299, 299], align_corners=False)
    expected = F.grid_sample(image, grid, mode='bilinear', padding_mode='border', align_corners=False)
    ours = detectors.resize_bilinear_tf1(image, 299, 299)
    assert (ours - expected).abs().max() < 0.05  # grid_sample's float32 coordinate maths, ~1e-4 pixel.
    reference = torch.einsum('ih,nchw,jw->ncij', _tf1_weights(37, 299), image.double(), _tf1_weights(530, 299))
    assert (ours.double() - reference).abs().max() < 1e-3

    same = torch.rand(1, 3, 299, 299, generator=gen) * 255
    assert torch.equal(detectors.resize_bilinear_tf1(same, 299, 299), same)


def test_forward_resizes_then_scales_and_repeats_gray(inception):
    gray = torch.randint(0, 256, (1, 1, 40, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    rgb = gray.float().repeat(1, 3, 1, 1)
    expected = inception.pool3((detectors.resize_bilinear_tf1(rgb, 299, 299) - 128) / 128)
    assert torch.equal(inception(gray, return_features=True), expected)


def test_train_mode_does_not_change_batchnorm(inception):
    x = torch.randn(2, 192, 9, 9, generator=torch.Generator().manual_seed(4))
    block = inception.Mixed_5b
    before = block(x)
    block.train()
    try:
        assert torch.equal(block(x), before)
    finally:
        block.eval()


# ----------------------------------------------------------------------------------------------
# The FID graph's pooling quirks, checked on single blocks.


@pytest.mark.parametrize('name, channels, size, pool_channels', [
    ('Mixed_5b', 192, 35, 32), ('Mixed_6b', 768, 17, 192), ('Mixed_7b', 1280, 8, 192)])
def test_average_pools_exclude_padding(inception, name, channels, size, pool_channels):
    block = getattr(inception, name)
    x = torch.full((1, channels, size, size), 0.7)
    pooled = block(x)[:, -pool_channels:]
    assert pooled.abs().max() > 0
    assert torch.allclose(pooled, pooled[:, :, size // 2:size // 2 + 1, size // 2:size // 2 + 1].expand_as(pooled),
                          rtol=1e-5, atol=1e-6)
    # Counting the padded zeros would make the border differ: the check above is sensitive to it.
    included = block.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True))
    assert (included[..., 0, 0] - included[..., size // 2, size // 2]).abs().max() > 1e-3


def test_last_block_max_pools_and_the_one_before_averages(inception):
    gen = torch.Generator().manual_seed(5)
    for name, channels, use_max in [('Mixed_7b', 1280, False), ('Mixed_7c', 2048, True)]:
        block = getattr(inception, name)
        x = torch.rand(1, channels, 8, 8, generator=gen) * 2
        pooled = block(x)[:, -192:]
        as_max = block.branch_pool(F.max_pool2d(x, 3, stride=1, padding=1))
        as_avg = block.branch_pool(F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
        assert torch.allclose(pooled, as_max if use_max else as_avg, atol=1e-6), name
        assert (as_max - as_avg).abs().max() > 1e-2


def test_no_output_bias_drops_exactly_the_bias(inception):
    images = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(6))
    features = inception(images, return_features=True).double()
    weight, bias = inception.fc.weight.double(), inception.fc.bias.double()
    with_bias, without_bias = inception(images), inception(images, no_output_bias=True)
    assert torch.allclose(with_bias.double(), torch.softmax(features @ weight.T + bias, dim=1), rtol=1e-4, atol=1e-9)
    assert torch.allclose(without_bias.double(), torch.softmax(features @ weight.T, dim=1), rtol=1e-4, atol=1e-9)
    # log p - log p_unbiased = bias + a constant.
    shift = with_bias.double().log() - without_bias.double().log() - bias
    assert shift.std() < 1e-4 and bias.std() > 0.5


# ----------------------------------------------------------------------------------------------
# Downloads, caching and the other file kinds.


def test_offline_download_names_the_url_and_the_cache_path(tmp_path, monkeypatch):
    calls = []

    def no_network(url, *args, **kwargs):
        calls.append(url)
        raise ConnectionError('network disabled for this test')

    monkeypatch.setattr(dnnlib.util, '_download', no_network)
    monkeypatch.setattr(dnnlib.util, '_dnnlib_cache_dir', str(tmp_path / 'cache'))
    url = 'https://example.invalid/x.pth'
    start = time.time()
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(url)
    assert time.time() - start < 5 and calls == [url]
    expected_path = os.path.join(str(tmp_path / 'cache'), 'downloads', dnnlib.util.url_cache_key(url) + '_x.pth')
    message = str(info.value)  # dnnlib's DownloadError sentence, ending with the path to copy.
    assert '\n' not in message and url in message and message.endswith(' ' + expected_path), message
    assert isinstance(info.value, ValueError)

    # Placing the file there by hand, as the message says, makes the same URL load without a download.
    torch.save(_tiny_vgg_state_dict(), str(tmp_path / 'vgg.pth'))
    os.makedirs(os.path.dirname(expected_path))
    shutil.copyfile(str(tmp_path / 'vgg.pth'), expected_path)
    assert isinstance(detectors.load_detector(url), detectors.VGG16) and calls == [url]


class _MeanDetector(torch.nn.Module):
    """Stands in for NVIDIA's pickled and TorchScript detectors."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, images, return_features: bool = False):
        return images.float().mean(dim=(2, 3)) * self.scale


@pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated:DeprecationWarning')
def test_pickles_and_torchscript_keep_the_official_calling_convention(tmp_path):
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    expected = images.float().mean(dim=(2, 3)) * 2
    pickled = str(tmp_path / 'detector.pkl')
    with open(pickled, 'wb') as f:
        pickle.dump(_MeanDetector().train(), f)
    scripted = str(tmp_path / 'detector.pt')
    torch.jit.script(_MeanDetector()).save(scripted)
    for path, kind in [(pickled, _MeanDetector), (scripted, torch.jit.ScriptModule)]:
        detector = detectors.load_detector(path)
        assert isinstance(detector, kind) and not detector.training
        assert torch.equal(detector(images, return_features=True), expected)


# ----------------------------------------------------------------------------------------------
# VGG16.


def _tiny_vgg_state_dict(widths=(2, 3, 4, 4, 5), fc_channels=6, num_classes=5, seed=7):
    """torchvision's VGG16 names, with narrow layers."""
    gen = torch.Generator().manual_seed(seed)
    state_dict, in_channels = {}, 3
    for index, stage in zip(VGG16_CONV_INDICES, VGG16_STAGE_OF_CONV):
        out_channels = widths[stage]
        state_dict[f'features.{index}.weight'] = torch.randn(out_channels, in_channels, 3, 3, generator=gen) * 0.3
        state_dict[f'features.{index}.bias'] = torch.randn(out_channels, generator=gen) * 0.1 + 0.1
        in_channels = out_channels
    for index, (fan_out, fan_in) in zip((0, 3, 6), [(fc_channels, in_channels * 49), (fc_channels, fc_channels),
                                                    (num_classes, fc_channels)]):
        state_dict[f'classifier.{index}.weight'] = torch.randn(fan_out, fan_in, generator=gen) / math.sqrt(fan_in)
        state_dict[f'classifier.{index}.bias'] = torch.randn(fan_out, generator=gen) * 0.1 + 0.1
    return state_dict


def test_vgg16_has_torchvision_names_and_shapes():
    with torch.device('meta'):
        model = detectors.VGG16()
    shapes = {name: list(value.shape) for name, value in model.state_dict().items()}
    assert len(shapes) == 32
    assert shapes['features.0.weight'] == [64, 3, 3, 3] and shapes['features.28.weight'] == [512, 512, 3, 3]
    assert shapes['classifier.0.weight'] == [4096, 25088] and shapes['classifier.6.weight'] == [1000, 4096]
    assert set(shapes) == set(_tiny_vgg_state_dict())


def test_vgg16_state_dict_loads_and_gives_fc2_features(tmp_path):
    path = str(tmp_path / 'vgg16.pth')
    state_dict = _tiny_vgg_state_dict()
    torch.save(state_dict, path)
    detector = detectors.load_detector(path)
    assert isinstance(detector, detectors.VGG16)
    images = torch.randint(0, 256, (2, 1, 100, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(8))
    features = detector(images, return_features=True)
    assert features.shape == (2, 6) and features.dtype == torch.float32 and (features >= 0).all()
    probabilities = detector(images)
    assert probabilities.shape == (2, 5) and torch.allclose(probabilities.sum(dim=1), torch.ones(2))
    # Features are fc2 after its ReLU: the last layer applied to them gives the logits.
    logits = features @ state_dict['classifier.6.weight'].T + state_dict['classifier.6.bias']
    assert torch.allclose(probabilities, torch.softmax(logits, dim=1), atol=1e-6)
    # Already 224x224: no resize, and resize_images=False skips it for other sizes.
    at_224 = F.interpolate(images.float(), size=(224, 224), mode='bilinear', align_corners=False, antialias=True)
    assert torch.allclose(detector(at_224, return_features=True), features, atol=1e-5)

    # torch.save's legacy (pre-zip) format is recognised too, and read with weights_only.
    legacy = str(tmp_path / 'legacy.pth')
    torch.save(state_dict, legacy, _use_new_zipfile_serialization=False)
    assert torch.equal(detectors.load_detector(legacy)(images, return_features=True), features)

    del state_dict['classifier.3.bias']
    torch.save(state_dict, path)
    detectors._detector_cache.clear()
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(path)
    _assert_one_sentence(str(info.value), path, 'VGG16', 'classifier.3.bias')


# ----------------------------------------------------------------------------------------------
# CUDA.


@pytest.mark.gpu
def test_cuda_features_match_cpu_without_tf32(inception):
    images = torch.randint(0, 256, (2, 3, 128, 128), dtype=torch.uint8, generator=torch.Generator().manual_seed(9))
    on_cpu = inception(images, return_features=True)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        on_cuda = detectors.FIDInceptionV3.from_state_dict(inception.state_dict()).cuda()(images.cuda(), return_features=True)
        assert torch.backends.cudnn.allow_tf32  # Restored after the forward pass.
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert ((on_cuda.cpu() - on_cpu).abs().max() / on_cpu.abs().max()) < 1e-4
