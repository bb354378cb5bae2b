"""Readers for the files that image data sets are published as.

Each ``read_*`` function takes the folder given as ``--data-dir`` (or, for ``read_npz``, the file) and
returns a :class:`DatasetArrays` with ``uint8`` images shaped ``(N, C, H, W)`` and ``int64`` labels
starting at 0. The folder may be the official top folder itself (``cifar-10-batches-py``) or the folder
holding it. Missing, truncated or malformed files raise :class:`UserInputError` with a one-line message
naming the file, what was expected, and where the data set is published; nothing here downloads.

Layouts, flags and normalization are described in ``docs/datasets.md``. Over 400 lines as one
cohesive job: one reader per published format, with the checks each format needs.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ssl_toolkit.data.arrays import DatasetArrays
from ssl_toolkit.data.safe_pickle import safe_load_pickle
from ssl_toolkit.errors import UserInputError

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/"
STL10_URL = "https://cs.stanford.edu/~acoates/stl10/"
MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist"

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
DIGIT_CLASSES = [str(d) for d in range(10)]

# --------------------------------------------------------------------------------------------- locating


def _spec_label(names: Sequence[str]) -> str:
    # Messages name the official spelling; mirrors' variants are accepted without being listed.
    return f"{names[0]}[.gz]" if f"{names[0]}.gz" in names else names[0]


def _locate(
    dataset: str,
    root: str | Path,
    subdirs: Sequence[str],
    required: Sequence[Sequence[str]],
    url: str,
) -> tuple[Path, list[Path]]:
    """Find the folder (``root`` or ``root/<subdir>``) that holds every required file.

    ``required`` lists, per file, the names it may go by (plain or gzipped, ...). Returns the folder and
    the path found for each required file, in order.
    """
    base = Path(root).expanduser().absolute()
    candidates = [base] + [base / sub for sub in subdirs]
    closest: tuple[Path, list[str]] | None = None
    for folder in candidates:
        found: list[Path] = []
        missing: list[str] = []
        for names in required:
            hit = next((folder / n for n in names if (folder / n).is_file()), None)
            if hit is None:
                missing.append(_spec_label(names))
            else:
                found.append(hit)
        if not missing:
            return folder, found
        if len(missing) < len(required) and closest is None:
            closest = (folder, missing)
    expected = ", ".join(_spec_label(names) for names in required)
    looked = ", ".join(str(c) for c in candidates)
    partial = f"; {closest[0]} lacks {', '.join(closest[1])}" if closest else ""
    raise UserInputError(
        f"{dataset}: expected files {expected}; looked in {looked}{partial}; "
        f"get the data set from {url} and point --data-dir at the folder holding it (see docs/datasets.md)"
    )


def _bad(path: Path, problem: str, url: str | None = None) -> UserInputError:
    hint = f"; re-download it from {url}" if url else ""
    return UserInputError(f"{path}: {problem}{hint}")


def _check_labels(path: Path, labels: np.ndarray, count: int, low: int, high: int, url: str | None) -> None:
    if labels.ndim != 1 or len(labels) != count:
        raise _bad(path, f"expected {count} labels (one per image), found shape {tuple(labels.shape)}", url)
    if not np.issubdtype(labels.dtype, np.integer):
        raise _bad(path, f"labels must be integers, found dtype {labels.dtype}", url)
    if count and (labels.min() < low or labels.max() > high):
        found = f"{int(labels.min())}..{int(labels.max())}"
        raise _bad(path, f"labels must lie in [{low}, {high}], found {found}", url)


# ------------------------------------------------------------------------------------------ CIFAR-10/100


def _cifar_pickle(path: Path, url: str) -> dict[str, Any]:
    obj = safe_load_pickle(path)
    if not isinstance(obj, dict):
        raise _bad(path, f"expected a pickled dict, found {type(obj).__name__}", url)
    # Python 2 pickles give str keys under encoding="latin1"; files re-pickled elsewhere may use bytes.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, num_classes: int, url: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _cifar_pickle(path, url)
    for key in ("data", label_key):
        if key not in batch:
            found = sorted(map(str, batch))
            raise _bad(path, f"missing key {key!r} (found {found}); expected data and {label_key}", url)
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _bad(path, f"'data' must be a uint8 array shaped (N, 3072), found {found}", url)
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError) as error:
        raise _bad(path, f"{label_key!r} is not a list of integers ({error})", url) from None
    _check_labels(path, labels, len(data), 0, num_classes - 1, url)
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_names(path: Path, key: str, count: int, url: str) -> list[str] | None:
    if not path.is_file():
        return None
    meta = _cifar_pickle(path, url)
    names = meta.get(key)
    if not isinstance(names, list) or len(names) != count:
        raise _bad(path, f"expected {key!r} to list {count} class names", url)
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]


def _read_cifar(
    name: str, root: str | Path, top: str, train_files: list[str], test_file: str, meta_file: str,
    label_key: str, names_key: str, num_classes: int,
) -> DatasetArrays:
    folder, paths = _locate(name, root, [top], [[f] for f in [*train_files, test_file]], CIFAR_URL)
    parts = [_cifar_batch(p, label_key, num_classes, CIFAR_URL) for p in paths]
    x_train = np.concatenate([x for x, _ in parts[:-1]])
    y_train = np.concatenate([y for _, y in parts[:-1]])
    x_test, y_test = parts[-1]
    return DatasetArrays(
        name, x_train, y_train, x_test, y_test, num_classes=num_classes,
        class_names=_cifar_names(folder / meta_file, names_key, num_classes, CIFAR_URL),
    )


def read_cifar10(root: str | Path) -> DatasetArrays:
    """CIFAR-10, python version: ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``."""
    return _read_cifar(
        "cifar10", root, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
        "batches.meta", "labels", "label_names", 10,
    )


def read_cifar100(root: str | Path) -> DatasetArrays:
    """CIFAR-100, python version: ``cifar-100-python/{train, test, meta}``, with the 100 fine labels."""
    return _read_cifar(
        "cifar100", root, "cifar-100-python", ["train"], "test", "meta",
        "fine_labels", "fine_label_names", 100,
    )


# ------------------------------------------------------------------------------------------------ SVHN


def _svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import scipy.io  # imported here: only SVHN needs scipy, and importing it costs time

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except NotImplementedError:  # scipy says this for MATLAB v7.3 (HDF5) files
        raise _bad(path, "is a MATLAB v7.3 file; the official SVHN files are MATLAB v5", SVHN_URL) from None
    except Exception as error:  # loadmat signals a damaged file with many unrelated exception types
        raise _bad(path, f"not a readable MATLAB file ({type(error).__name__}: {error})", SVHN_URL) from None
    for key in ("X", "y"):
        if key not in mat:
            raise _bad(path, f"missing variable {key!r}; expected X (32, 32, 3, N) and y (N, 1)", SVHN_URL)
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise _bad(path, f"X must be uint8 shaped (32, 32, 3, N), found {x.dtype} {x.shape}", SVHN_URL)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    _check_labels(path, y, x.shape[3], 1, 10, SVHN_URL)
    # The files label digit 0 as 10.
    labels = np.where(y == 10, 0, y).astype(np.int64)
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels


def read_svhn(root: str | Path, extra: bool = False) -> DatasetArrays:
    """SVHN cropped digits: ``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat``).

    Label 10 in the files is digit 0. With ``extra=True`` the 531,131 extra images join
    ``x_extra_unlabeled`` (their labels are not used).
    """
    files = [["train_32x32.mat"], ["test_32x32.mat"]] + ([["extra_32x32.mat"]] if extra else [])
    _, paths = _locate("svhn", root, ["svhn", "SVHN"], files, SVHN_URL)
    x_train, y_train = _svhn_mat(paths[0])
    x_test, y_test = _svhn_mat(paths[1])
    x_extra = _svhn_mat(paths[2])[0] if extra else None
    return DatasetArrays(
        "svhn", x_train, y_train, x_test, y_test, num_classes=10, x_extra_unlabeled=x_extra,
        class_names=DIGIT_CLASSES,
    )


# ---------------------------------------------------------------------------------------------- STL-10

_STL_IMAGE_BYTES = 3 * 96 * 96


def _stl_images(path: Path, limit: int | None = None) -> np.ndarray:
    size = path.stat().st_size
    if size == 0 or size % _STL_IMAGE_BYTES:
        raise _bad(
            path, f"{size} bytes is not a whole number of 96x96x3 images ({_STL_IMAGE_BYTES} bytes each); "
            "the file is truncated or not an STL-10 image file", STL10_URL,
        )
    count = size // _STL_IMAGE_BYTES if limit is None else min(limit, size // _STL_IMAGE_BYTES)
    if count == 0:
        return np.zeros((0, 3, 96, 96), np.uint8)
    # A memory map reads only the images asked for (unlabeled_X.bin is 2.7 GB).
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, 3, 96, 96))
    # Each channel is stored column-major: swapping the last two axes gives (H, W).
    images = np.ascontiguousarray(raw.transpose(0, 1, 3, 2))
    del raw
    return images


def _stl_labels(path: Path, count: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8)
    _check_labels(path, labels, count, 1, 10, STL10_URL)
    return labels.astype(np.int64) - 1


def read_stl10(root: str | Path, max_unlabeled: int | None = None) -> DatasetArrays:
    """STL-10 binary: ``stl10_binary/{train,test}_{X,y}.bin`` and ``unlabeled_X.bin``.

    Labels 1..10 in the files become 0..9. The 100,000 unlabeled images go to ``x_extra_unlabeled``;
    ``max_unlabeled`` keeps only the first that many (0 skips the file, which then need not exist).
    """
    if max_unlabeled is not None and max_unlabeled < 0:
        raise UserInputError(f"stl10: max_unlabeled must be >= 0 or None, got {max_unlabeled}")
    files = [["train_X.bin"], ["train_y.bin"], ["test_X.bin"], ["test_y.bin"]]
    if max_unlabeled != 0:
        files.append(["unlabeled_X.bin"])
    folder, paths = _locate("stl10", root, ["stl10_binary"], files, STL10_URL)
    x_train = _stl_images(paths[0])
    y_train = _stl_labels(paths[1], len(x_train))
    x_test = _stl_images(paths[2])
    y_test = _stl_labels(paths[3], len(x_test))
    x_unlabeled = _stl_images(paths[4], max_unlabeled) if max_unlabeled != 0 else None
    names_path = folder / "class_names.txt"
    class_names = None
    if names_path.is_file():
        lines = names_path.read_text(errors="replace").splitlines()
        class_names = [line.strip() for line in lines if line.strip()]
        if len(class_names) != 10:
            problem = f"expected 10 class names, one a line, found {len(class_names)}"
            raise _bad(names_path, problem, STL10_URL)
    return DatasetArrays(
        "stl10", x_train, y_train, x_test, y_test, num_classes=10, x_extra_unlabeled=x_unlabeled,
        class_names=class_names,
    )


# ---------------------------------------------------------------------------------- MNIST (IDX files)

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse one IDX file (plain or gzip-compressed, recognized by content) into an array.

    The header is two zero bytes, a type code (0x08 unsigned byte, ..., 0x0E double), the number of
    dimensions, then each dimension as a big-endian uint32; the data must fill the rest exactly.
    """
    path = Path(path).absolute()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserInputError(f"{path}: cannot read file ({error.strerror or error})") from None
    if data[:2] == b"\x1f\x8b":  # the gzip magic number
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            problem = f"cannot decompress ({type(error).__name__}: {error}); the file is truncated or corrupt"
            raise _bad(path, problem) from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise _bad(path, f"not an IDX file: magic bytes are {data[:4].hex() or 'missing'}, expected 0000TTDD "
                   "(TT a type code 08..0e, DD the number of dimensions)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _bad(path, f"IDX header announces {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(data) - header != expected:
        raise _bad(path, f"IDX header says shape {dims} ({expected} data bytes) but "
                   f"{len(data) - header} follow; the file is truncated or corrupt")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_names(stem: str, kind: str) -> list[str]:
    # Official names use a dash before idx; some mirrors use a dot. Either may be gzipped.
    plain = [f"{stem}-{kind}", f"{stem}.{kind}"]
    return plain + [n + ".gz" for n in plain]


_MNIST_LIKE = {
    "mnist": (MNIST_URL, ["mnist", "MNIST/raw", "MNIST"], DIGIT_CLASSES),
    "fashion_mnist": (
        FASHION_MNIST_URL, ["fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "data/fashion"],
        FASHION_MNIST_CLASSES,
    ),
}


def _idx_checked(path: Path, ndim: int, url: str) -> np.ndarray:
    array = read_idx(path)
    if array.dtype != np.uint8 or array.ndim != ndim:
        magic = f"0x0000080{ndim}"
        raise _bad(path, f"expected unsigned bytes in {ndim} dimensions (magic {magic}), "
                   f"found {array.dtype} in {array.ndim}", url)
    return array


def read_mnist_idx(root: str | Path, name: str = "mnist") -> DatasetArrays:
    """MNIST or Fashion-MNIST (``name`` "mnist" or "fashion_mnist") from their four IDX files.

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
    ``t10k-labels-idx1-ubyte``, each plain or ``.gz``, in ``root`` or in a known sub-folder
    (``fashion-mnist``, ``MNIST/raw``, ...). Images come back shaped (N, 1, 28, 28).
    """
    key = name.lower().replace("-", "_")
    if key not in _MNIST_LIKE:
        known = ", ".join(_MNIST_LIKE)
        raise UserInputError(f"read_mnist_idx: unknown name {name!r}; expected one of {known}")
    url, subdirs, class_names = _MNIST_LIKE[key]
    required = [
        _idx_names("train-images", "idx3-ubyte"), _idx_names("train-labels", "idx1-ubyte"),
        _idx_names("t10k-images", "idx3-ubyte"), _idx_names("t10k-labels", "idx1-ubyte"),
    ]
    _, paths = _locate(key, root, subdirs, required, url)
    splits = []
    for images_path, labels_path in ((paths[0], paths[1]), (paths[2], paths[3])):
        images = _idx_checked(images_path, 3, url)
        labels = _idx_checked(labels_path, 1, url)
        _check_labels(labels_path, labels, len(images), 0, 9, url)
        splits.append((images[:, None], labels.astype(np.int64)))
    (x_train, y_train), (x_test, y_test) = splits
    return DatasetArrays(key, x_train, y_train, x_test, y_test, num_classes=10, class_names=class_names)


# ----------------------------------------------------------------------------------------- image folder

_GRAY_MODES = {"1", "L", "LA", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def _class_dirs(split_dir: Path) -> dict[str, Path]:
    strays = [p for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if strays:
        problem = f"image outside any class folder; {split_dir} must hold one sub-folder per class"
        raise _bad(strays[0], problem)
    return {p.name: p for p in sorted(split_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _open_image(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.size  # noqa: B018 - touching the header makes Pillow validate it now
        return image
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise _bad(path, f"not a readable image ({type(error).__name__}: {error})") from None


def read_image_array(path: Path, gray: bool, image_size: int | None) -> np.ndarray:
    from PIL import Image

    with _open_image(path) as image:
        try:
            if image.mode in _SIXTEEN_BIT_MODES:
                image = Image.fromarray((np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8), "L")
            elif image.mode in ("I", "F"):
                problem = f"image mode {image.mode} (32-bit) is not supported; save it as 8-bit L or RGB"
                raise _bad(path, problem)
            image = image.convert("L" if gray else "RGB")
            if image_size is not None and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
            array = np.asarray(image, dtype=np.uint8)
        except UserInputError:
            raise
        except (OSError, ValueError, SyntaxError) as error:  # Pillow decodes lazily: damage shows up here
            raise _bad(path, f"cannot decode image ({type(error).__name__}: {error})") from None
    return array[None] if gray else array.transpose(2, 0, 1)


def read_imagefolder(root: str | Path, image_size: int | None = None) -> DatasetArrays:
    """Images sorted into ``root/train/<class>/``, ``root/test/<class>/`` and optionally ``root/unlabeled/``.

    Classes are the sub-folders of ``train/``, sorted by name; ``test/`` may hold a subset of them.
    ``unlabeled/`` may be flat or nested; its images go to ``x_extra_unlabeled``. Images become RGB,
    or single-channel if every image is grayscale. With ``image_size`` each is resized (not cropped) to
    ``image_size x image_size``; without it all images must already share one size.
    """
    if image_size is not None and image_size < 1:
        raise UserInputError(f"image_size must be a positive number of pixels, got {image_size}")
    base = Path(root).expanduser().absolute()
    train_dir, test_dir, unlabeled_dir = base / "train", base / "test", base / "unlabeled"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise UserInputError(
            f"imagefolder: expected folders {train_dir}/<class>/ and {test_dir}/<class>/ holding images "
            f"({', '.join(IMAGE_EXTENSIONS)}); point --data-dir at the folder holding train/ and test/"
        )
    train_classes = _class_dirs(train_dir)
    if not train_classes:
        raise UserInputError(
            f"imagefolder: {train_dir} has no class sub-folders; expected train/<class>/<image>"
        )
    test_classes = _class_dirs(test_dir)
    unknown = sorted(set(test_classes) - set(train_classes))
    if unknown:
        raise UserInputError(
            f"imagefolder: test classes {unknown} have no folder in {train_dir}; "
            f"test classes must be among the training classes {sorted(train_classes)}"
        )
    class_names = sorted(train_classes)
    index = {name: i for i, name in enumerate(class_names)}

    def labeled(classes: dict[str, Path]) -> tuple[list[Path], list[int]]:
        paths: list[Path] = []
        labels: list[int] = []
        for name, folder in classes.items():
            files = _image_files(folder)
            if not files and folder.parent == train_dir:
                raise UserInputError(
                    f"imagefolder: class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})"
                )
            paths += files
            labels += [index[name]] * len(files)
        return paths, labels

    train_paths, train_labels = labeled(train_classes)
    test_paths, test_labels = labeled(test_classes)
    if not test_paths:
        raise UserInputError(f"imagefolder: {test_dir} holds no images; expected test/<class>/<image>")
    unlabeled_paths: list[Path] = []
    if unlabeled_dir.is_dir():
        unlabeled_paths = _image_files(unlabeled_dir)
        if not unlabeled_paths:
            raise UserInputError(
                f"imagefolder: {unlabeled_dir} exists but holds no images; remove it or add images"
            )

    # First pass reads only headers: the channel count and the size must be known before allocating.
    every = train_paths + test_paths + unlabeled_paths
    gray = True
    first_size: tuple[Path, tuple[int, int]] | None = None
    for path in every:
        with _open_image(path) as image:
            gray = gray and image.mode in _GRAY_MODES
            if image_size is None:
                if first_size is None:
                    first_size = (path, image.size)
                elif image.size != first_size[1]:
                    raise UserInputError(
                        f"imagefolder: {path} is {image.size[0]}x{image.size[1]} but {first_size[0]} is "
                        f"{first_size[1][0]}x{first_size[1][1]}; "
                        "pass --image-size N to resize all images to NxN"
                    )

    def load(paths: list[Path]) -> np.ndarray:
        if not paths:
            return np.zeros((0, 1 if gray else 3, 1, 1), np.uint8)
        first = read_image_array(paths[0], gray, image_size)
        out = np.empty((len(paths), *first.shape), np.uint8)
        out[0] = first
        for i, path in enumerate(paths[1:], start=1):
            out[i] = read_image_array(path, gray, image_size)
        return out

    return DatasetArrays(
        base.name, load(train_paths), np.asarray(train_labels, np.int64), load(test_paths),
        np.asarray(test_labels, np.int64), num_classes=len(class_names),
        x_extra_unlabeled=load(unlabeled_paths) if unlabeled_paths else None, class_names=class_names,
    )


# ------------------------------------------------------------------------------------------------- .npz

_NPZ_REQUIRED = ("x_train", "y_train", "x_test", "y_test")
_NPZ_OPTIONAL = ("x_unlabeled", "class_names")


def as_uint8_images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    """Images ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` (C in {1, 3}), uint8 or floats in [0, 1],
    as contiguous uint8 ``(N, C, H, W)``; anything else is a UserInputError naming ``path`` and ``key``."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        channels_first, channels_last = x.shape[1] in (1, 3), x.shape[3] in (1, 3)
        if channels_first and channels_last:
            raise _bad(path, f"{key} shaped {x.shape} is ambiguous: both axis 1 and axis 3 could be channels")
        if channels_last:
            x = x.transpose(0, 3, 1, 2)
        elif not channels_first:
            raise _bad(path, f"{key} shaped {x.shape} has no channel axis of size 1 or 3 "
                       "(expected (N, H, W), (N, H, W, C) or (N, C, H, W))")
    else:
        raise _bad(path, f"{key} must be shaped (N, H, W), (N, H, W, C) or (N, C, H, W), found {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
            raise _bad(path, f"{key} is {x.dtype} with values {np.nanmin(x):g}..{np.nanmax(x):g}; "
                       "float images must lie in [0, 1] (or store uint8 values 0..255)")
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    if np.issubdtype(x.dtype, np.integer) and not x.dtype == np.bool_:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise _bad(path, f"{key} is {x.dtype} with values {x.min()}..{x.max()}; expected 0..255")
        return np.ascontiguousarray(x.astype(np.uint8))
    raise _bad(path, f"{key} has dtype {x.dtype}; expected uint8, or floats in [0, 1]")


def _npz_labels(path: Path, key: str, y: np.ndarray, count: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise _bad(path, f"{key} must hold integer class indices, found dtype {y.dtype}")
    if y.ndim != 1 or len(y) != count:
        raise _bad(path, f"{key} must be shaped ({count},) to match the images, found {y.shape}")
    if count and y.min() < 0:
        raise _bad(path, f"{key} holds negative label {int(y.min())}; labels must be 0..num_classes-1")
    return y.astype(np.int64)


def read_npz(path: str | Path) -> DatasetArrays:
    """Arrays saved with ``np.savez``: ``x_train, y_train, x_test, y_test`` and optionally ``x_unlabeled``
    and ``class_names`` (a string array; without it there are ``max label + 1`` classes).

    Images may be ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)`` with C in {1, 3}, as uint8 or as
    floats in [0, 1]. ``path`` may also be a folder holding exactly one ``.npz`` file. Pickled (object)
    arrays are refused.
    """
    import zipfile

    file = Path(path).expanduser().absolute()
    if file.is_dir():
        found = sorted(file.glob("*.npz"))
        if len(found) != 1:
            raise UserInputError(
                f"npz: {file} holds {len(found)} .npz files ({', '.join(p.name for p in found) or 'none'}); "
                "point --data-dir at the .npz file itself"
            )
        file = found[0]
    if not file.is_file():
        raise UserInputError(
            f"npz: {file} not found; expected a .npz file with keys {', '.join(_NPZ_REQUIRED)}"
        )
    try:
        # Opened here, not by np.load, so that a damaged archive does not leak the file handle.
        with open(file, "rb") as stream, np.load(stream, allow_pickle=False) as archive:
            keys = set(archive.files)
            missing = [k for k in _NPZ_REQUIRED if k not in keys]
            unknown = sorted(keys - set(_NPZ_REQUIRED) - set(_NPZ_OPTIONAL))
            if missing or unknown:
                expected = f"{', '.join(_NPZ_REQUIRED)} (optional {', '.join(_NPZ_OPTIONAL)})"
                raise _bad(file, f"keys must be {expected}; missing {missing}, unexpected {unknown}")
            arrays = {k: archive[k] for k in keys}
    except UserInputError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as error:
        raise _bad(file, f"not a readable .npz archive ({type(error).__name__}: {error})") from None
    x_train = as_uint8_images(file, "x_train", arrays["x_train"])
    x_test = as_uint8_images(file, "x_test", arrays["x_test"])
    y_train = _npz_labels(file, "y_train", arrays["y_train"], len(x_train))
    y_test = _npz_labels(file, "y_test", arrays["y_test"], len(x_test))
    x_unlabeled = as_uint8_images(file, "x_unlabeled", arrays["x_unlabeled"]) if "x_unlabeled" in arrays else None
    class_names = None
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise _bad(file, f"class_names must be a 1-D string array, found {names.dtype} {names.shape}")
        class_names = [str(n) for n in names.tolist()]
        num_classes = len(class_names)
    else:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1))) + 1
    if num_classes < 1:
        raise _bad(file, "y_train and y_test are both empty; at least one labeled image is needed")
    top = max(y_train.max(initial=-1), y_test.max(initial=-1))
    if top >= num_classes:
        raise _bad(file, f"labels reach {int(top)} but class_names lists {num_classes} classes "
                   f"(labels must be 0..{num_classes - 1})")
    return DatasetArrays(
        file.stem, x_train, y_train, x_test, y_test, num_classes=num_classes, x_extra_unlabeled=x_unlabeled,
        class_names=class_names,
    )
