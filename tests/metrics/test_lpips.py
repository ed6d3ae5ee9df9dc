"""LPIPSVGG16 against a float64 recomputation of the LPIPS formula, its state_dict loading, and the merge CLI."""

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cli_checks import assert_cli_error
from metrics import detectors, lpips
from multiproc import run_processes

WIDTHS = (4, 4, 8, 8, 8)
# torchvision's VGG16 `features` indices of the convolutions, stage by stage.
STAGE_CONVS = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
SHIFT = torch.tensor([-.030, -.088, -.188], dtype=torch.float64).view(1, 3, 1, 1)
SCALE = torch.tensor([.458, .448, .450], dtype=torch.float64).view(1, 3, 1, 1)


def random_features(widths=WIDTHS, seed=0):
    gen = torch.Generator().manual_seed(seed)
    state_dict, in_channels = {}, 3
    for width, convs in zip(widths, STAGE_CONVS):
        for index in convs:
            weight = torch.randn([width, in_channels, 3, 3], generator=gen) * math.sqrt(2 / (9 * in_channels))
            state_dict[f'features.{index}.weight'] = weight
            state_dict[f'features.{index}.bias'] = 0.1 * torch.randn([width], generator=gen)
            in_channels = width
    return state_dict


def random_lins(widths=WIDTHS, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return {f'lin{i}.model.1.weight': torch.rand([1, width, 1, 1], generator=gen) for i, width in enumerate(widths)}


def random_state_dict(seed=0):
    return {**random_features(seed=seed), **random_lins(seed=seed + 1)}


def reference_distance(state_dict, images0, images1):
    """LPIPS v0.1 written out in float64: scaling layer, VGG16 taps, unit-normalise, weighted squared difference,
    spatial mean, sum over channels and taps."""
    sd = {k: v.to(torch.float64) for k, v in state_dict.items()}

    def taps(images):
        x = (images.to(torch.float64) / 127.5 - 1 - SHIFT) / SCALE
        result = []
        for stage, convs in enumerate(STAGE_CONVS):
            if stage > 0:
                x = F.max_pool2d(x, 2)
            for index in convs:
                x = F.relu(F.conv2d(x, sd[f'features.{index}.weight'], sd[f'features.{index}.bias'], padding=1))
            result.append(x)
        return result

    total = torch.zeros(images0.shape[0], dtype=torch.float64)
    for layer, (a, b) in enumerate(zip(taps(images0), taps(images1))):
        a = a / (a.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
        weighted = ((a - b).square() * sd[f'lin{layer}.model.1.weight']).sum(dim=1)
        total += weighted.sum(dim=(1, 2)) / (weighted.shape[1] * weighted.shape[2])
    return total


def lpips_distance(model, images0, images1, **kwargs):
    a = model(images0, return_lpips=True, **kwargs)
    b = model(images1, return_lpips=True, **kwargs)
    return (a - b).square().sum(dim=1)


def random_images(n, size=32, seed=0, channels=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, [n, channels, size, size], generator=gen, dtype=torch.uint8)


@pytest.fixture(autouse=True)
def fresh_detector_cache(monkeypatch):
    monkeypatch.setattr(detectors, '_detector_cache', {})


@pytest.fixture(scope='module')
def model():
    return lpips.LPIPSVGG16.from_state_dict(random_state_dict())


def test_distance_matches_the_float64_formula(model):
    images0, images1 = random_images(3, seed=0), random_images(3, seed=1)
    images1[0] = images0[0]  # identical pair: distance 0
    images1[1] = (images0[1].float() * 0.9 + 10).to(torch.uint8)  # a close pair
    expected = reference_distance(random_state_dict(), images0, images1)
    got = lpips_distance(model, images0, images1, resize_images=False).to(torch.float64)
    assert got[0] == 0 and expected[1] < expected[2]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_vector_layout_and_input_kinds(model):
    images = random_images(2, channels=1)
    vectors = model(images, resize_images=False, return_lpips=True)
    taps = [32, 16, 8, 4, 2]
    assert vectors.shape == (2, sum(w * s * s for w, s in zip(WIDTHS, taps))) and vectors.dtype == torch.float32
    torch.testing.assert_close(vectors, model(images.repeat(1, 3, 1, 1).float(), resize_images=False, return_lpips=True))
    # resize_images=True resizes to 224 first; the 32x32 input then has 224-sized taps.
    resized = model(images, return_lpips=True)
    assert resized.shape == (2, sum(w * (224 // 2 ** i) ** 2 for i, w in enumerate(WIDTHS)))


def test_only_lpips_vectors(model):
    images = random_images(1)
    for kwargs in (dict(), dict(return_features=True), dict(return_lpips=True, return_features=True)):
        with pytest.raises(ValueError, match='return_lpips=True'):
            model(images, **kwargs)


def test_round_trip_through_load_detector(tmp_path, model):
    images = random_images(2)
    expected = model(images, resize_images=False, return_lpips=True)
    classifier = detectors.VGG16(WIDTHS, fc_channels=8, num_classes=10).state_dict()
    classifier = {k: v for k, v in classifier.items() if k.startswith('classifier.')}
    for name, extra in [('plain.pth', {}), ('with_classifier.pth', classifier)]:
        torch.save({**random_state_dict(), **extra}, tmp_path / name)
        loaded = detectors.load_detector(str(tmp_path / name))
        assert type(loaded) is lpips.LPIPSVGG16 and loaded.widths == WIDTHS
        torch.testing.assert_close(loaded(images, resize_images=False, return_lpips=True), expected, rtol=0, atol=0)


def _one_sentence(message, *words):
    assert '\n' not in message and message.endswith('.'), message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize('change, words', [
    (lambda sd: sd.pop('lin3.model.1.weight'), ['lacks', 'lin3.model.1.weight']),
    (lambda sd: sd.pop('features.5.bias'), ['lacks', 'features.5.bias']),
    (lambda sd: sd.update({'features.7.weight': torch.zeros([4, 4, 1, 1])}), ['features.7.weight', 'shape']),
    (lambda sd: sd.update({'lin0.model.1.weight': -torch.ones([1, 4, 1, 1])}), ['lin0.model.1.weight', 'negative']),
    (lambda sd: sd.update({'lin0.model.1.weight': torch.ones([1, 4, 1, 1], dtype=torch.int64)}), ['lin0.model.1.weight', 'floating']),
    (lambda sd: sd.update({'scaling_layer.shift': torch.zeros([1, 3, 1, 1])}), ['unexpected', 'scaling_layer.shift']),
])
def test_bad_state_dicts_name_the_key(tmp_path, change, words):
    state_dict = random_state_dict()
    change(state_dict)
    torch.save(state_dict, tmp_path / 'bad.pth')
    with pytest.raises(detectors.DetectorError) as info:
        detectors.load_detector(str(tmp_path / 'bad.pth'))
    _one_sentence(str(info.value), 'bad.pth', 'LPIPS', *words)


# ----------------------------------------------------------------------------------------------
# The merge command.


@pytest.fixture(scope='module')
def published_files(tmp_path_factory):
    """Stand-ins for torchvision's vgg16-397923af.pth (features + classifier) and LPIPS v0.1's vgg.pth."""
    folder = tmp_path_factory.mktemp('published')
    vgg16 = detectors.VGG16(WIDTHS, fc_channels=8, num_classes=10).state_dict()
    vgg16.update(random_features())
    torch.save(vgg16, folder / 'vgg16.pth')
    torch.save(random_lins(), folder / 'vgg.pth')
    (folder / 'notes.txt').write_text('not weights')
    return folder


def _merge_command(folder, vgg16='vgg16.pth', lin='vgg.pth', dest='merged.pth'):
    return [sys.executable, '-m', 'metrics.lpips', f'--vgg16={folder / vgg16}', f'--lin={folder / lin}', f'--dest={folder / dest}']


def _assert_failed(result, *words):
    code, out, err = result
    assert code != 0 and 'Traceback' not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), err
    _one_sentence(lines[0], *words)


def test_merge_cli_in_subprocesses(tmp_path, published_files):
    folder = tmp_path
    for name in ('vgg16.pth', 'vgg.pth', 'notes.txt'):
        (folder / name).write_bytes((published_files / name).read_bytes())
    (folder / 'taken.pth').write_bytes(b'keep me')
    ok, exists, swapped = run_processes([
        _merge_command(folder),
        _merge_command(folder, dest='taken.pth'),
        _merge_command(folder, vgg16='vgg.pth', lin='vgg16.pth', dest='swapped.pth'),
    ], timeout=60)
    assert ok[0] == 0, ok[2]
    merged = torch.load(folder / 'merged.pth', weights_only=True)
    assert not any(k.startswith('classifier.') for k in merged)
    images = random_images(2)
    expected = lpips.LPIPSVGG16.from_state_dict(random_state_dict())(images, resize_images=False, return_lpips=True)
    loaded = detectors.load_detector(str(folder / 'merged.pth'))
    torch.testing.assert_close(loaded(images, resize_images=False, return_lpips=True), expected)
    _assert_failed(exists, 'taken.pth', 'already exists')
    assert (folder / 'taken.pth').read_bytes() == b'keep me'
    _assert_failed(swapped, '--vgg16', 'features')
    assert not (folder / 'swapped.pth').exists()
    assert sorted(p.name for p in folder.iterdir()) == ['merged.pth', 'notes.txt', 'taken.pth', 'vgg.pth', 'vgg16.pth']


@pytest.mark.parametrize('args, words', [
    (dict(lin='vgg16.pth'), ['--lin', 'lin0.model.1.weight']),
    (dict(vgg16='notes.txt'), ['--vgg16', 'notes.txt', 'state_dict']),
    (dict(lin='missing.pth'), ['--lin', 'missing.pth', 'does not exist']),
    (dict(dest='no/such/folder/x.pth'), ['--dest', 'folder']),
])
def test_merge_cli_errors(tmp_path, published_files, args, words):
    command = _merge_command(published_files, **{**dict(dest=str(tmp_path / 'out.pth')), **args})
    result = CliRunner().invoke(lpips.main, command[3:])
    assert_cli_error(result, *words)
    assert not (tmp_path / 'out.pth').exists()


def test_merge_rejects_mismatched_widths(published_files):
    lins = random_lins(widths=(4, 4, 8, 8, 16))
    with pytest.raises(lpips.LPIPSFileError, match='lin4.model.1.weight'):
        lpips.merge_state_dicts(torch.load(published_files / 'vgg16.pth', weights_only=True), lins)
