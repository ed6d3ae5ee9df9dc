"""The pose-error benchmark: closed-form poses, a regressor that beats the mean pose, references where they belong."""

import json
import math
import os
import sys

import pytest
import torch

import tiny_networks
from training import cameras, synthetic_shapes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO_ROOT, "bench"))

import pose_error  # noqa: E402

RESOLUTION = 16


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small convolutions gain little from a second thread, and with OpenMP's busy-waiting they ran
    # ~30x slower on a shared 2-core machine (the script itself sets OMP_WAIT_POLICY=PASSIVE).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_pose_from_labels_inverts_lookat_labels():
    generator = torch.Generator().manual_seed(0)
    yaw = (torch.rand([512], generator=generator) * 2 - 1) * 2.5
    pitch = (torch.rand([512], generator=generator) * 2 - 1) * 1.4
    # The pose is the camera centre's, whatever the camera looks at.
    for pivot in ((0, 0, 0), cameras.FFHQ_PIVOT, (0.1, -0.2, 0.3)):
        poses = pose_error.pose_from_labels(cameras.lookat_labels(yaw, pitch, pivot=pivot))
        torch.testing.assert_close(poses, torch.stack([yaw, pitch], dim=1), atol=2e-5, rtol=0)
    # Frontal is (0, 0); positive yaw puts the camera at world +x, positive pitch below the target.
    c2w = cameras.unpack(cameras.lookat_labels(torch.tensor([0.3, 0.0]), torch.tensor([0.0, 0.2])))[0]
    assert c2w[0, 0, 3] > 0 and c2w[1, 1, 3] < 0


def test_labels_from_pose_are_synthetic_shapes_cameras():
    yaw, pitch = torch.tensor([0.0, 0.3, -0.5]), torch.tensor([0.0, -0.1, 0.2])
    labels = pose_error.labels_from_pose(yaw, pitch)
    cameras.validate(labels)
    torch.testing.assert_close(pose_error.pose_from_labels(labels), torch.stack([yaw, pitch], dim=1), atol=1e-6, rtol=0)
    # Frontal: the synthetic renderer's camera at its mean pose (looking at the origin, same intrinsics).
    c2w = cameras.GaussianCameraPoseSampler.sample(cameras.FRONTAL_YAW, cameras.FRONTAL_PITCH,
                                                   radius=synthetic_shapes.CAMERA_RADIUS)
    frontal = cameras.pack(c2w, synthetic_shapes.default_intrinsics())
    torch.testing.assert_close(labels[:1], frontal, atol=1e-5, rtol=0)
    assert pose_error.pose_grid(5, 3).shape == (15, 25)


class RenderingSynthesis(torch.nn.Module):
    """Random synthetic scenes rendered at the camera `c` (or always at the frontal one): a stand-in synthesis."""

    def __init__(self, ignore_camera):
        super().__init__()
        self.ignore_camera = ignore_camera
        self.scene_generator = torch.Generator().manual_seed(123)

    def forward(self, ws, c=None, noise_mode='const'):
        if self.ignore_camera:
            c = pose_error.labels_from_pose(torch.zeros(len(ws)), torch.zeros(len(ws)))
        scenes = synthetic_shapes.random_scenes(len(ws), self.scene_generator)
        return synthetic_shapes.render(scenes, *cameras.unpack(c), RESOLUTION, RESOLUTION, supersample=2) * 2 - 1


class RenderingGenerator(torch.nn.Module):
    """A camera-conditioned generator that is the synthetic renderer (a perfect one, or one blind to the camera)."""

    label_kind = 'camera'
    synthesis_options = ('camera', 'noise_mode')
    output_key = None

    def __init__(self, ignore_camera=False):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = 4, 25, 4, 1
        self.img_resolution, self.img_channels = RESOLUTION, 3
        self.synthesis = RenderingSynthesis(ignore_camera)

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None):
        return z.unsqueeze(1)


@pytest.fixture(scope="module")
def fitted():
    """A regressor trained on 1024 synthetic 16x16 images (about 3 s), with its held-out record."""
    source = pose_error.PoseSource(None, resolution=RESOLUTION)
    regressor, heldout, _, cached = pose_error.fit_regressor(source, num_images=1024, seed=0)
    assert not cached
    return source, regressor, heldout


@pytest.mark.parametrize("angle", ["yaw", "pitch"])
def test_regressor_beats_the_mean_pose_on_held_out_images(fitted, angle):
    _, regressor, heldout = fitted
    # Measured at 16x16: held-out yaw 5.2 deg vs 12.6 for the mean pose (the sky's glow shows it),
    # pitch 2.2 vs 6.5 (the horizon). Without the glow, yaw was not recoverable (13.6 vs 12.6).
    assert heldout["num"] == 128 and heldout[f"{angle}_informative"]
    assert heldout[f"{angle}_deg"] < 0.6 * heldout[f"{angle}_mean_pose_deg"]
    assert heldout[f"{angle}_corr"] > 0.7
    assert regressor.resolution == RESOLUTION


def test_renderer_scores_near_the_floor_and_a_camera_blind_generator_near_the_mean_pose(fitted):
    source, regressor, heldout = fitted
    labels = source.labels(128, seed=1)
    mean_pose = pose_error.measure_mean_pose(regressor, labels)
    renderer = pose_error.measure_renderer(regressor, labels, RESOLUTION, seed=1)
    following = pose_error.measure(RenderingGenerator(), regressor, labels, seed=1)
    blind = pose_error.measure(RenderingGenerator(ignore_camera=True), regressor, labels, seed=1)
    for angle in ("yaw", "pitch"):
        floor = heldout[f"{angle}_deg"]
        for record in (renderer, following):
            assert record[f"{angle}_deg"] < 1.5 * floor and record[f"{angle}_deg"] < 0.7 * mean_pose[f"{angle}_deg"], record
            assert record[f"{angle}_corr"] > 0.7, record
        assert 0.7 * mean_pose[f"{angle}_deg"] < blind[f"{angle}_deg"] < 1.5 * mean_pose[f"{angle}_deg"], (blind, mean_pose)
        assert abs(blind[f"{angle}_corr"]) < 0.3, blind


def test_training_is_deterministic():
    images, labels = pose_error.render_real(128, 8, seed=3)
    poses = pose_error.pose_from_labels(labels)
    first, second = (pose_error.train_pose_regressor(images, poses, epochs=2, batch=32, seed=5) for _ in range(2))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_untrained_copy_has_the_architecture_and_fresh_weights():
    G = tiny_networks.camera_generator(img_resolution=RESOLUTION)
    copy = pose_error.untrained_copy(G)
    assert type(copy) is type(G) and copy.init_kwargs == G.init_kwargs
    assert not torch.equal(copy.synthesis.from_camera, G.synthesis.from_camera)


def _run_cli(capsys, *args):
    pose_error.main(list(args))
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_cli_prints_one_record_per_subject_and_reuses_the_cached_regressor(tmp_path, capsys):
    G = tiny_networks.camera_generator(img_resolution=RESOLUTION)
    network = tiny_networks.save_snapshot(tmp_path / "camera.pkl", G)
    args = [f"--network={network}", "--num=32", "--regressor-images=256", "--device=cpu",
            f"--cache-regressor={tmp_path / 'regressor.pt'}"]
    records = _run_cli(capsys, *args)
    assert [r["subject"] for r in records] == ["regressor_heldout", "mean_pose", "renderer", "trained", "untrained"]
    for record in records:
        assert record["measurement"] == "pose_error" and record["resolution"] == RESOLUTION
        assert math.isfinite(record["yaw_deg"]) and math.isfinite(record["pitch_deg"])
    assert records[0]["cached"] is False and records[3]["num"] == 32
    again = _run_cli(capsys, *args)
    assert again[0]["cached"] is True
    for first, second in zip(records, again):
        assert (first["yaw_deg"], first["pitch_deg"]) == (second["yaw_deg"], second["pitch_deg"])


def _cli_error(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        pose_error.main(list(args))
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    if isinstance(exit_info.value.code, str):  # sys.exit(message) prints it when the interpreter exits
        err += exit_info.value.code + "\n"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
    return lines[0]


def test_cli_errors_are_one_sentence(tmp_path, capsys):
    missing = tmp_path / "missing.pkl"
    assert str(missing) in _cli_error(capsys, f"--network={missing}", "--device=cpu")
    not_camera = tiny_networks.save_snapshot(tmp_path / "sg2.pkl", tiny_networks.stylegan2_generator())
    assert "not camera-conditioned" in _cli_error(capsys, f"--network={not_camera}", "--device=cpu")
    camera = tiny_networks.save_snapshot(tmp_path / "camera.pkl", tiny_networks.camera_generator())
    missing_data = tmp_path / "missing.zip"
    assert "missing.zip" in _cli_error(capsys, f"--network={camera}", f"--data={missing_data}", "--device=cpu")
    assert "--num" in _cli_error(capsys, f"--network={camera}", "--num=0")


def test_25_float_labels_that_are_not_cameras_are_named_not_called_missing(tmp_path, capsys):
    import zipfile
    import numpy as np
    import PIL.Image
    path = tmp_path / "poses.zip"
    labels = [label[:22] + [0.0, 0.0, 2.0] for label in cameras.lookat_labels([0.0] * 2, [0.1] * 2).tolist()]
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(2):
            with archive.open(f"img{i}.png", "w") as f:
                PIL.Image.fromarray(np.zeros([16, 16, 3], np.uint8)).save(f, format="png")
        archive.writestr("dataset.json", json.dumps({"labels": [[f"img{i}.png", labels[i]] for i in range(2)]}))
    camera = tiny_networks.save_snapshot(tmp_path / "camera.pkl", tiny_networks.camera_generator())
    message = _cli_error(capsys, f"--network={camera}", f"--data={path}", "--device=cpu")
    assert "img0.png" in message and "last intrinsics row must be (0, 0, 1)" in message and "no 25-float" not in message


def test_ctrl_c_exits_130_in_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
        yield
    monkeypatch.setattr(pose_error, "run", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        pose_error.main(["--network=network.pkl", "--device=cpu"])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "Interrupted.\n"
