"""Image datasets for training and metrics: a folder or an uncompressed zip of images plus `dataset.json`.

`Dataset` is the base class: it picks an optional seeded subset (`max_size`), optionally doubles the
data with horizontally mirrored copies (`xflip`), and turns raw labels into the vectors the networks
take (class integers become one-hot, float vectors such as 25-float cameras pass through).
`ImageFolderDataset` reads the files written by `dataset_tool.py`.

Mirroring a camera-labelled image without mirroring its pose would pair each flipped image with the
wrong camera, so `xflip` on camera labels is refused unless `xflip_camera_labels=True` asks for the
pose to be mirrored too (`cameras.flip_yaw`, as EG3D does).

Every problem with the user's data raises `DatasetError`: one sentence naming the file and the fix.
"""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import torch

import dnnlib
from training import cameras

try:
    import pyspng  # optional: a faster PNG decoder
except ImportError:
    pyspng = None


class DatasetError(ValueError):
    """A problem with the dataset the user pointed at; the message is one sentence naming the file and the fix."""


class MissingLabelsError(DatasetError):
    """Labels were asked for but dataset.json holds none (as opposed to labels that are there but unusable)."""

# ----------------------------------------------------------------------------------------------


class Dataset(torch.utils.data.Dataset):
    """Indexing, subsets, mirroring and labels; subclasses provide `_load_raw_image` and `_load_raw_labels`."""

    def __init__(self,
                 name,                          # Name of the dataset (used for the run directory name).
                 raw_shape,                     # Shape of the raw image data [N, C, H, W].
                 max_size=None,                 # Use a seeded random subset of at most this many images.
                 use_labels=False,              # Return the labels (otherwise zero-size label vectors).
                 xflip=False,                   # Double the data with horizontally mirrored copies.
                 random_seed=0,                 # Seed for choosing the `max_size` subset.
                 xflip_camera_labels=False,     # With `xflip` on camera labels, mirror the poses too.
                 ):
        self._name = name
        self._raw_shape = list(raw_shape)
        self._use_labels = use_labels
        self._xflip_camera_labels = xflip_camera_labels
        self._raw_labels = None
        self._label_shape = None
        self._camera_labels = None          # set by _check_float_labels
        self._camera_label_problem = None

        self._raw_idx = np.arange(self._raw_shape[0], dtype=np.int64)
        if max_size is not None:
            if max_size < 1:
                raise DatasetError(f"max_size={max_size} for dataset '{self._source()}' must be at least 1; pass a "
                                   f"positive number of images or none to use them all.")
            if max_size < self._raw_idx.size:
                np.random.RandomState(random_seed % (1 << 31)).shuffle(self._raw_idx)
                self._raw_idx = np.sort(self._raw_idx[:max_size])

        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

        if use_labels:
            self._get_raw_labels()  # report missing or malformed labels now rather than in a worker
            if xflip and self.has_camera_labels and not xflip_camera_labels:
                raise DatasetError(f"Dataset '{self._source()}' has camera labels, and mirroring its images (--mirror, "
                                   f"xflip=True) without mirroring their poses would pair each flipped image with the "
                                   f"wrong camera; pass --mirror-cameras (xflip_camera_labels=True) to mirror the "
                                   f"poses too, or drop --mirror.")

    def _get_raw_labels(self):
        if self._raw_labels is None:
            labels = self._load_raw_labels() if self._use_labels else None
            if labels is None:
                if self._use_labels:
                    raise MissingLabelsError(f"Dataset '{self._source()}' has no labels in dataset.json; train without "
                                       f"--cond or re-pack the dataset with labels using dataset_tool.py.")
                labels = np.zeros([self._raw_shape[0], 0], dtype=np.float32)
            self._check_raw_labels(labels)
            self._raw_labels = labels
        return self._raw_labels

    def _check_raw_labels(self, labels):
        if not isinstance(labels, np.ndarray) or labels.shape[:1] != (self._raw_shape[0],):
            raise DatasetError(f"Dataset '{self._source()}' has {len(labels)} labels for {self._raw_shape[0]} "
                               f"images; re-pack it with dataset_tool.py so that every image has one label.")
        if labels.dtype == np.int64:
            if labels.ndim != 1 or (labels.size and labels.min() < 0):
                raise DatasetError(f"Dataset '{self._source()}' has class labels that are not non-negative integers; "
                                   f"fix its dataset.json.")
        elif labels.dtype != np.float32 or labels.ndim != 2:
            raise DatasetError(f"Dataset '{self._source()}' has labels of type {labels.dtype} and shape "
                               f"{list(labels.shape)}, not class integers or float vectors; fix its dataset.json.")
        else:
            self._check_float_labels(labels)

    def _check_float_labels(self, labels):
        """Refuse NaN or infinite values, and camera labels of which some are not valid cameras; note whether the
        labels are cameras (`has_camera_labels`) and, for 25 floats that are not, why (`camera_label_problem`)."""
        nonfinite = np.flatnonzero(~np.isfinite(labels).all(axis=1))
        if nonfinite.size:
            raise DatasetError(f"{self._describe_raw_image(int(nonfinite[0]))} has NaN or infinite values in its label "
                               f"in dataset.json; labels must be finite numbers, so fix or remove that label (and "
                               f"re-pack the dataset with dataset_tool.py).")
        self._camera_labels = False
        self._camera_label_problem = None
        if labels.shape[1] != cameras.LABEL_DIM or labels.shape[0] == 0:
            return
        problems = cameras.problems(torch.from_numpy(labels))
        invalid = [index for index, problem in enumerate(problems) if problem is not None]
        if invalid and len(invalid) < len(problems):
            raise DatasetError(f"{self._describe_raw_image(invalid[0])} has a 25-float label that is not a valid camera, "
                               f"while {len(problems) - len(invalid)} other label(s) of the dataset are: "
                               f"{problems[invalid[0]]}; fix that camera in dataset.json or remove the image.")
        self._camera_labels = not invalid
        if invalid:
            self._camera_label_problem = (f"{self._describe_raw_image(invalid[0])} has a 25-float label that is not a "
                                          f"valid camera: {problems[invalid[0]]}")

    def close(self):  # to be overridden by subclass
        pass

    def _load_raw_image(self, raw_idx):  # to be overridden by subclass
        raise NotImplementedError

    def _load_raw_labels(self):  # to be overridden by subclass
        raise NotImplementedError

    def _describe_raw_image(self, raw_idx):  # to be overridden by subclass
        return f"Image #{raw_idx} of dataset '{self._source()}'"

    def _source(self):  # to be overridden by subclass: what to name in error messages
        return self._name

    def __getstate__(self):
        # DataLoader workers get a pickled copy; labels are reloaded there on demand.
        return dict(self.__dict__, _raw_labels=None)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn down what close() needs
            pass

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        raw_idx = int(self._raw_idx[idx])
        image = self._load_raw_image(raw_idx)
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or list(image.shape) != self.image_shape:
            shape = list(getattr(image, 'shape', []))
            raise DatasetError(f"{self._describe_raw_image(raw_idx)} has shape {shape} (CHW) but the dataset's images "
                               f"are {self.image_shape}; re-pack the dataset with dataset_tool.py so that all images "
                               f"share one size and channel count.")
        if self._xflip[idx]:
            image = image[:, :, ::-1]
        return image.copy(), self.get_label(idx)  # copy(): C-contiguous and not a view of cached data

    def get_label(self, idx):
        raw_idx = int(self._raw_idx[idx])
        label = self._get_raw_labels()[raw_idx]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        if self._xflip[idx] and self._xflip_camera_labels and self.has_camera_labels:
            return cameras.flip_yaw(torch.from_numpy(label)).numpy().astype(np.float32)
        return label.copy()

    def get_details(self, idx):
        raw_idx = int(self._raw_idx[idx])
        return dnnlib.EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]),
                               raw_label=self._get_raw_labels()[raw_idx].copy())

    @property
    def name(self):
        return self._name

    @property
    def image_shape(self):
        return list(self._raw_shape[1:])

    @property
    def num_channels(self):
        assert len(self.image_shape) == 3  # CHW
        return self.image_shape[0]

    @property
    def resolution(self):
        assert len(self.image_shape) == 3  # CHW
        if self.image_shape[1] != self.image_shape[2]:
            raise DatasetError(f"Dataset '{self._source()}' has non-square "
                               f"{self.image_shape[2]}x{self.image_shape[1]} images; re-pack it with dataset_tool.py "
                               f"--transform=center-crop --resolution=RxR.")
        return self.image_shape[1]

    @property
    def label_shape(self):
        if self._label_shape is None:
            raw_labels = self._get_raw_labels()
            if raw_labels.dtype == np.int64:
                self._label_shape = [int(np.max(raw_labels)) + 1]
            else:
                self._label_shape = list(raw_labels.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self):
        assert len(self.label_shape) == 1
        return self.label_shape[0]

    @property
    def has_labels(self):
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self):
        return self._get_raw_labels().dtype == np.int64

    @property
    def has_camera_labels(self):
        """True when every label is a valid 25-float camera (`cameras.problems`)."""
        self._get_raw_labels()
        return bool(self._camera_labels)

    @property
    def camera_label_problem(self):
        """For 25-float labels that are not cameras: what is wrong with the first (naming its image); else None."""
        self._get_raw_labels()
        return self._camera_label_problem

# ----------------------------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """A folder (searched recursively) or a .zip of images, with optional labels in a root `dataset.json`."""

    def __init__(self,
                 path,                  # Path to a directory or a zip file.
                 resolution=None,       # Ensure the images have this resolution.
                 **super_kwargs,        # Arguments of the Dataset base class.
                 ):
        self._path = path
        self._zipfile = None
        self._zipfile_pid = None

        if os.path.isdir(self._path):
            self._type = 'dir'
            self._all_fnames = sorted(os.path.relpath(os.path.join(root, fname), start=self._path).replace(os.sep, '/')
                                      for root, _dirs, files in os.walk(self._path) for fname in files)
        elif os.path.isfile(self._path) and self._file_ext(self._path) == '.zip':
            self._type = 'zip'
            self._all_fnames = sorted(self._get_zipfile().namelist())
        elif not os.path.exists(self._path):
            raise DatasetError(f"Dataset path '{self._path}' does not exist; pass an image folder or a .zip made by "
                               f"dataset_tool.py.")
        else:
            raise DatasetError(f"Dataset path '{self._path}' is neither a folder nor a .zip file; pass an image folder "
                               f"or a .zip made by dataset_tool.py.")

        PIL.Image.init()
        self._image_fnames = [f for f in self._all_fnames if self._file_ext(f) in PIL.Image.EXTENSION]
        if len(self._image_fnames) == 0:
            raise DatasetError(f"No image files found in dataset '{self._path}'; pass a folder or .zip of images made "
                               f"by dataset_tool.py.")

        name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        raw_shape = [len(self._image_fnames)] + list(self._load_raw_image(0).shape)
        if resolution is not None and (raw_shape[2] != resolution or raw_shape[3] != resolution):
            raise DatasetError(f"Image files do not match the specified resolution: '{self._image_fnames[0]}' in "
                               f"'{self._path}' is {raw_shape[3]}x{raw_shape[2]}, not {resolution}x{resolution}; "
                               f"re-pack the dataset with dataset_tool.py --resolution={resolution}x{resolution}.")
        super().__init__(name=name, raw_shape=raw_shape, **super_kwargs)

    @staticmethod
    def _file_ext(fname):
        return os.path.splitext(fname)[1].lower()

    def _get_zipfile(self):
        assert self._type == 'zip'
        # A handle inherited through fork shares its file offset with the parent: open one per process.
        if self._zipfile is None or self._zipfile_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self._path)
            except (zipfile.BadZipFile, OSError) as error:
                raise DatasetError(f"Cannot read dataset zip '{self._path}' ({error}); pass a valid .zip made by "
                                   f"dataset_tool.py.") from None
            self._zipfile_pid = os.getpid()
        return self._zipfile

    def _open_file(self, fname):
        if self._type == 'dir':
            return open(os.path.join(self._path, fname), 'rb')
        return self._get_zipfile().open(fname, 'r')

    def close(self):
        try:
            if self._zipfile is not None and self._zipfile_pid == os.getpid():
                self._zipfile.close()
        finally:
            self._zipfile = None
            self._zipfile_pid = None

    def __getstate__(self):
        return dict(super().__getstate__(), _zipfile=None, _zipfile_pid=None)

    def _describe_raw_image(self, raw_idx):
        return f"Image '{self._image_fnames[raw_idx]}' in '{self._path}'"

    def _source(self):
        return self._path

    def _load_raw_image(self, raw_idx):
        fname = self._image_fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                if pyspng is not None and self._file_ext(fname) == '.png':
                    image = pyspng.load(f.read())
                else:
                    image = np.array(PIL.Image.open(f))
        except DatasetError:
            raise
        except Exception as error:  # decoders raise many kinds for corrupt or unreadable files
            raise DatasetError(f"Cannot read image '{fname}' in '{self._path}' ({type(error).__name__}: {error}); "
                               f"remove or replace the file.") from None
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise DatasetError(f"Image '{fname}' in '{self._path}' is not an 8-bit grayscale or colour image "
                               f"({image.dtype}, shape {list(image.shape)}); convert it with dataset_tool.py.")
        if image.ndim == 2:
            image = image[:, :, np.newaxis]  # HW => HWC
        return image.transpose(2, 0, 1)  # HWC => CHW

    def _load_raw_labels(self):
        fname = 'dataset.json'
        if fname not in self._all_fnames:
            return None
        where = f"dataset.json in '{self._path}'"
        try:
            with self._open_file(fname) as f:
                labels = json.load(f)['labels']
            if labels is None:
                return None
            if not isinstance(labels, list):
                raise TypeError(f'"labels" is a {type(labels).__name__}, not a list')
            labels = {str(name).replace('\\', '/'): label for name, label in labels}
        except (ValueError, KeyError, TypeError) as error:
            raise DatasetError(f'{where} is not of the form {{"labels": [["name.png", label], ...]}} '
                               f'({type(error).__name__}: {error}); fix it or re-pack the dataset with '
                               f'dataset_tool.py.') from None
        missing = [f for f in self._image_fnames if f not in labels]
        if missing:
            raise DatasetError(f"Image '{missing[0]}' has no label in {where}; add one for every image or re-pack the "
                               f"dataset with dataset_tool.py.")
        return self._labels_to_array([labels[f] for f in self._image_fnames], where)

    def _labels_to_array(self, labels, where):
        first_kind = _label_kind(labels[0])
        for fname, label in zip(self._image_fnames, labels):
            kind = _label_kind(label)
            if kind is None:
                raise DatasetError(f"Image '{fname}' has the label {json.dumps(label)[:60]} in {where}, which is "
                                   f"neither a class integer nor a list of numbers; fix the file.")
            if kind != first_kind:
                raise DatasetError(f"The label of '{fname}' in {where} is {_describe_label_kind(kind)} but that of "
                                   f"'{self._image_fnames[0]}' is {_describe_label_kind(first_kind)}; make all labels "
                                   f"the same kind and length.")
            if kind == 'class' and label < 0:
                raise DatasetError(f"Image '{fname}' has the negative class label {label} in {where}; class labels "
                                   f"must be integers from 0.")
        if first_kind == 'class':
            return np.array(labels, dtype=np.int64)
        return np.array(labels, dtype=np.float32).reshape(len(labels), -1)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _label_kind(label):
    """'class' for an integer, the length for a list of numbers, None for anything else."""
    if isinstance(label, int) and not isinstance(label, bool):
        return 'class'
    if isinstance(label, list) and all(_is_number(x) for x in label):
        return len(label)
    return None


def _describe_label_kind(kind):
    if kind == 'class':
        return 'a class integer'
    return f"a list of {kind} number{'' if kind == 1 else 's'}"
