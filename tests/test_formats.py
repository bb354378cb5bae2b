"""Readers of the official data-set file formats, checked on tiny files written per the published specs."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
from official_format_files import (
    MNIST_FILES,
    idx_bytes,
    malicious_pickle,
    position_images,
    py2_pickle,
    write_cifar10,
    write_cifar100,
    write_imagefolder,
    write_mnist,
    write_npz,
    write_png,
    write_stl10,
    write_svhn,
)

from ssl_toolkit.data.formats import (
    read_cifar10,
    read_cifar100,
    read_idx,
    read_imagefolder,
    read_mnist_idx,
    read_npz,
    read_stl10,
    read_svhn,
)
from ssl_toolkit.data.safe_pickle import safe_load_pickle
from ssl_toolkit.data.sources import get_dataset_spec
from ssl_toolkit.errors import UserInputError


def assert_same(arrays, expected) -> None:
    assert arrays.x_train.dtype == np.uint8 and arrays.x_test.dtype == np.uint8
    assert arrays.y_train.dtype == np.int64 and arrays.y_test.dtype == np.int64
    np.testing.assert_array_equal(arrays.x_train, expected.x_train)
    np.testing.assert_array_equal(arrays.y_train, expected.y_train)
    np.testing.assert_array_equal(arrays.x_test, expected.x_test)
    np.testing.assert_array_equal(arrays.y_test, expected.y_test)
    if expected.x_unlabeled is None:
        assert arrays.x_extra_unlabeled is None
    else:
        np.testing.assert_array_equal(arrays.x_extra_unlabeled, expected.x_unlabeled)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------------------------------------ CIFAR


def test_cifar10_reads_python2_batches_with_planar_row_major_pixels(tmp_path):
    expected = write_cifar10(tmp_path)
    arrays = read_cifar10(tmp_path)
    assert arrays.x_train.shape == (10, 3, 32, 32) and arrays.x_test.shape == (3, 3, 32, 32)
    assert_same(arrays, expected)
    assert arrays.num_classes == 10 and arrays.name == "cifar10"
    assert arrays.class_names[0] == "airplane" and arrays.class_names[9] == "truck"


def test_cifar10_accepts_the_batches_folder_itself(tmp_path):
    expected = write_cifar10(tmp_path)
    assert_same(read_cifar10(tmp_path / "cifar-10-batches-py"), expected)


def test_cifar100_uses_fine_labels_and_fine_class_names(tmp_path):
    expected = write_cifar100(tmp_path)
    for root in (tmp_path, tmp_path / "cifar-100-python"):
        arrays = read_cifar100(root)
        assert_same(arrays, expected)
        assert arrays.num_classes == 100 and len(arrays.class_names) == 100
        assert arrays.y_train.max() == 99  # coarse labels stop at 19: the fine ones were read


def test_cifar_missing_batch_message_names_files_place_and_url(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UserInputError) as info:
        read_cifar10(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "data_batch_4" in message and "test_batch" in message
    assert str(tmp_path.absolute()) in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message


def test_cifar_truncated_batch_is_reported_by_file_name(tmp_path):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    truncate(batch)
    with pytest.raises(UserInputError, match="data_batch_3.*truncated or corrupt"):
        read_cifar10(tmp_path)


def test_cifar_label_out_of_range_is_refused(tmp_path):
    write_cifar10(tmp_path, labels_test=[1, 10, 2])
    with pytest.raises(UserInputError, match=r"test_batch: labels must lie in \[0, 9\], found 1..10"):
        read_cifar10(tmp_path)


def test_cifar_batch_with_wrong_row_length_is_refused(tmp_path):
    write_cifar10(tmp_path)
    bad = {"data": np.zeros((2, 1024), np.uint8), "labels": [0, 1]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(py2_pickle(bad))
    with pytest.raises(UserInputError, match=r"data_batch_2: 'data' must be a uint8 array shaped \(N, 3072"):
        read_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------- safe pickles


@pytest.mark.parametrize(
    "func, refused",
    [
        (os.system, f"{os.system.__module__}.system"),  # posix.system on Linux
        (builtins.eval, "builtins.eval"),
        (subprocess.call, "subprocess.call"),
    ],
)
def test_pickle_that_would_run_a_command_is_refused_and_runs_nothing(tmp_path, func, refused):
    marker = tmp_path / "pwned"
    command = f"open({str(marker)!r}, 'w')" if func is builtins.eval else f"touch {marker}"
    arg = command if func is not subprocess.call else ["touch", str(marker)]
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(malicious_pickle(func, arg))
    with pytest.raises(UserInputError) as info:
        read_cifar10(tmp_path)
    assert str(batch) in str(info.value) and refused in str(info.value)
    assert not marker.exists()


def test_safe_pickle_loads_numpy_arrays_from_python3_protocols(tmp_path):
    data = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2], "x": np.float32(0.5)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_load_pickle(io.BytesIO(pickle.dumps(data, protocol=protocol)))
        np.testing.assert_array_equal(loaded[b"data"], data[b"data"])
        assert loaded["labels"] == [1, 2] and loaded["x"] == np.float32(0.5)


def test_safe_pickle_refuses_arbitrary_classes(tmp_path):
    path = tmp_path / "obj.pkl"
    path.write_bytes(pickle.dumps(Path("/x")))
    with pytest.raises(UserInputError, match=r"obj\.pkl: refused to load global 'pathlib\."):
        safe_load_pickle(path)


# ------------------------------------------------------------------------------------------------- SVHN


def test_svhn_maps_label_10_to_digit_0_and_transposes_images(tmp_path):
    expected = write_svhn(tmp_path / "svhn")
    expected.x_unlabeled = None
    arrays = read_svhn(tmp_path / "svhn")
    assert arrays.x_train.shape == (4, 3, 32, 32)
    assert_same(arrays, expected)
    assert arrays.y_train[0] == 0  # stored as 10 in the file


def test_svhn_extra_images_join_the_unlabeled_pool(tmp_path):
    expected = write_svhn(tmp_path / "svhn")
    arrays = read_svhn(tmp_path, extra=True)  # the parent folder: svhn/ is looked up
    assert_same(arrays, expected)


def test_svhn_missing_extra_file_is_reported_only_when_asked_for(tmp_path):
    write_svhn(tmp_path)
    (tmp_path / "extra_32x32.mat").unlink()
    read_svhn(tmp_path)
    with pytest.raises(UserInputError, match=r"extra_32x32\.mat.*http://ufldl\.stanford\.edu/housenumbers/"):
        read_svhn(tmp_path, extra=True)


def test_svhn_truncated_mat_file_is_reported_by_name(tmp_path):
    write_svhn(tmp_path)
    truncate(tmp_path / "test_32x32.mat", 0.4)
    with pytest.raises(UserInputError, match="test_32x32.mat: not a readable MATLAB file"):
        read_svhn(tmp_path)


def test_svhn_label_outside_1_to_10_is_refused(tmp_path):
    import scipy.io

    write_svhn(tmp_path)
    x = np.zeros((32, 32, 3, 2), np.uint8)
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[3], [0]], np.uint8)})
    with pytest.raises(UserInputError, match=r"train_32x32\.mat: labels must lie in \[1, 10\], found 0..3"):
        read_svhn(tmp_path)


# ----------------------------------------------------------------------------------------------- STL-10


def test_stl10_reads_column_major_images_and_shifts_labels_to_zero(tmp_path):
    expected = write_stl10(tmp_path)
    arrays = read_stl10(tmp_path)
    assert arrays.x_train.shape == (4, 3, 96, 96) and arrays.x_extra_unlabeled.shape == (5, 3, 96, 96)
    assert_same(arrays, expected)
    unlabeled = arrays.x_extra_unlabeled
    assert unlabeled.flags["C_CONTIGUOUS"] and not isinstance(unlabeled, np.memmap)
    assert arrays.class_names[7] == "monkey"


def test_stl10_max_unlabeled_keeps_the_first_images_and_zero_needs_no_file(tmp_path):
    expected = write_stl10(tmp_path)
    arrays = read_stl10(tmp_path / "stl10_binary", max_unlabeled=2)
    np.testing.assert_array_equal(arrays.x_extra_unlabeled, expected.x_unlabeled[:2])
    (tmp_path / "stl10_binary" / "unlabeled_X.bin").unlink()
    assert read_stl10(tmp_path, max_unlabeled=0).x_extra_unlabeled is None
    with pytest.raises(UserInputError, match=r"unlabeled_X\.bin.*https://cs\.stanford\.edu/~acoates/stl10/"):
        read_stl10(tmp_path)


def test_stl10_short_image_file_is_reported(tmp_path):
    write_stl10(tmp_path)
    images = tmp_path / "stl10_binary" / "test_X.bin"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(UserInputError, match=r"test_X\.bin: 110492 bytes is not a whole number of 96x96x3"):
        read_stl10(tmp_path)


def test_stl10_label_count_must_match_images(tmp_path):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(UserInputError, match=r"train_y\.bin: expected 4 labels"):
        read_stl10(tmp_path)


@pytest.mark.parametrize("bad_label", [0, 11])
def test_stl10_label_outside_1_to_10_is_refused(tmp_path, bad_label):
    write_stl10(tmp_path)
    (tmp_path / "stl10_binary" / "test_y.bin").write_bytes(bytes([1, bad_label, 3, 4]))
    with pytest.raises(UserInputError, match=r"test_y\.bin: labels must lie in \[1, 10\]"):
        read_stl10(tmp_path)


# ------------------------------------------------------------------------------------------- MNIST IDX


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_reads_gzipped_and_plain_files(tmp_path, gz):
    expected = write_mnist(tmp_path / "mnist", gz=gz)
    arrays = read_mnist_idx(tmp_path, "mnist")
    assert arrays.x_train.shape == (5, 1, 28, 28)
    assert_same(arrays, expected)
    assert arrays.class_names == [str(d) for d in range(10)]


def test_fashion_mnist_name_gives_its_class_names(tmp_path):
    expected = write_mnist(tmp_path, gz=True)
    arrays = read_mnist_idx(tmp_path, "fashion-mnist")
    assert_same(arrays, expected)
    assert arrays.name == "fashion_mnist" and arrays.class_names[9] == "Ankle boot"


def test_idx_reader_checks_magic_and_size(tmp_path):
    good = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(good)
    np.testing.assert_array_equal(read_idx(path), np.arange(24).reshape(2, 3, 4))
    path.write_bytes(b"\x01\x00" + good[2:])
    with pytest.raises(UserInputError, match="x-idx3-ubyte: not an IDX file: magic bytes are 01000803"):
        read_idx(path)
    path.write_bytes(good[:-1])
    with pytest.raises(UserInputError, match=r"header says shape \(2, 3, 4\) \(24 data bytes\) but 23"):
        read_idx(path)


def test_mnist_truncated_gzip_is_reported_by_name(tmp_path):
    write_mnist(tmp_path, gz=True)
    truncate(tmp_path / (MNIST_FILES["train_images"] + ".gz"), 0.5)
    with pytest.raises(UserInputError, match=r"train-images-idx3-ubyte\.gz: cannot decompress"):
        read_mnist_idx(tmp_path, "mnist")


def test_mnist_gzip_with_damaged_middle_is_reported_by_name(tmp_path):
    write_mnist(tmp_path, gz=True)
    path = tmp_path / (MNIST_FILES["test_images"] + ".gz")
    data = bytearray(path.read_bytes())
    data[20:60] = bytes(40)
    path.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match=r"t10k-images-idx3-ubyte\.gz: cannot decompress"):
        read_mnist_idx(tmp_path, "mnist")


def test_mnist_images_file_with_label_magic_is_refused(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / MNIST_FILES["test_images"]).write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(UserInputError, match=r"t10k-images-idx3-ubyte: expected unsigned bytes in 3 dim"):
        read_mnist_idx(tmp_path, "mnist")


def test_mnist_label_10_is_refused(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / MNIST_FILES["test_labels"]).write_bytes(idx_bytes(np.array([1, 10, 2], np.uint8)))
    with pytest.raises(UserInputError, match=r"t10k-labels-idx1-ubyte: labels must lie in \[0, 9\]"):
        read_mnist_idx(tmp_path, "mnist")


def test_mnist_missing_files_message_points_to_the_official_page(tmp_path):
    with pytest.raises(UserInputError) as info:
        read_mnist_idx(tmp_path, "fashion_mnist")
    message = str(info.value)
    assert "\n" not in message and "train-images-idx3-ubyte[.gz]" in message
    assert str(tmp_path / "fashion-mnist") in message
    assert "https://github.com/zalandoresearch/fashion-mnist" in message


def test_unknown_mnist_name_is_refused(tmp_path):
    with pytest.raises(UserInputError, match="unknown name 'kmnist'"):
        read_mnist_idx(tmp_path, "kmnist")


def test_system_fashion_mnist_reads_when_installed():
    folder = Path(get_dataset_spec("fashion_mnist").default_data_dir)
    if not (folder / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed at {folder}")
    arrays = read_mnist_idx(folder, "fashion_mnist")
    assert arrays.x_train.shape == (60000, 1, 28, 28) and arrays.x_test.shape == (10000, 1, 28, 28)
    assert np.bincount(arrays.y_train).tolist() == [6000] * 10


def test_default_data_dir():
    assert get_dataset_spec("fashion_mnist").default_data_dir == "/usr/share/datasets/fashion-mnist"
    assert Path(get_dataset_spec("cifar10").default_data_dir).expanduser() == Path.home() / "data"
    with pytest.raises(UserInputError, match="unknown data set 'imagenet'"):
        get_dataset_spec("imagenet")


# ---------------------------------------------------------------------------------------- image folder


def test_imagefolder_reads_classes_sorted_and_test_subset(tmp_path):
    expected = write_imagefolder(tmp_path, unlabeled=3)
    arrays = read_imagefolder(tmp_path)
    assert arrays.class_names == ["cat", "dog", "emu"] and arrays.num_classes == 3
    assert arrays.x_train.shape == (6, 3, 8, 8)
    assert_same(arrays, expected)


def test_imagefolder_all_grayscale_gives_one_channel(tmp_path):
    expected = write_imagefolder(tmp_path, channels=1)
    arrays = read_imagefolder(tmp_path)
    assert arrays.x_train.shape == (6, 1, 8, 8)
    assert_same(arrays, expected)


def test_imagefolder_mixed_gray_and_rgb_gives_rgb(tmp_path):
    write_imagefolder(tmp_path)
    gray = position_images(1, 1, 8, 8)[0]
    write_png(tmp_path / "train" / "cat" / "gray.png", gray)
    arrays = read_imagefolder(tmp_path)
    assert arrays.x_train.shape == (7, 3, 8, 8)
    np.testing.assert_array_equal(arrays.x_train[2], np.repeat(gray, 3, axis=0))  # cat: 00, 01, gray


def test_imagefolder_differing_sizes_need_image_size(tmp_path):
    write_imagefolder(tmp_path)
    write_png(tmp_path / "test" / "dog" / "big.png", position_images(1, 3, 12, 10)[0])
    with pytest.raises(UserInputError, match=r"big\.png is 10x12 but .* is 8x8; pass --image-size"):
        read_imagefolder(tmp_path)
    arrays = read_imagefolder(tmp_path, image_size=5)
    assert arrays.x_train.shape == (6, 3, 5, 5) and arrays.x_test.shape == (3, 3, 5, 5)


def test_imagefolder_test_class_unknown_to_train_is_refused(tmp_path):
    write_imagefolder(tmp_path)
    write_png(tmp_path / "test" / "yak" / "0.png", position_images(1, 3, 8, 8)[0])
    with pytest.raises(UserInputError, match=r"test classes \['yak'\] have no folder"):
        read_imagefolder(tmp_path)


def test_imagefolder_corrupt_image_is_reported_by_name(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(UserInputError, match=r"broken\.png: not a readable image"):
        read_imagefolder(tmp_path)


def test_imagefolder_without_test_folder_says_what_is_expected(tmp_path):
    write_png(tmp_path / "train" / "cat" / "0.png", position_images(1, 3, 8, 8)[0])
    with pytest.raises(UserInputError, match=r"expected folders .*train/<class>/ and .*test/<class>/"):
        read_imagefolder(tmp_path)


# ------------------------------------------------------------------------------------------------- npz


@pytest.mark.parametrize("layout, channels", [("NCHW", 3), ("NHWC", 3), ("NHWC", 1), ("NHW", 1)])
def test_npz_layouts_become_nchw(tmp_path, layout, channels):
    expected = write_npz(tmp_path / "toy.npz", layout, channels, unlabeled=2)
    arrays = read_npz(tmp_path / "toy.npz")
    assert arrays.x_train.shape == (4, channels, 6, 5) and arrays.name == "toy" and arrays.num_classes == 3
    assert_same(arrays, expected)


def test_npz_float_images_in_unit_range_become_uint8(tmp_path):
    expected = write_npz(tmp_path / "toy.npz", "NHWC", float01=True)
    assert_same(read_npz(tmp_path), expected)  # the folder holding one .npz works too


def test_npz_float_images_outside_unit_range_are_refused(tmp_path):
    x = np.full((2, 4, 4), 200.0)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 1])
    with pytest.raises(UserInputError, match=r"x_train is float64 with values 200\.\.200; float images must"):
        read_npz(tmp_path / "a.npz")


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    y_objects = np.array([0, "one"], dtype=object)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=y_objects, x_test=x, y_test=[0, 1])
    with pytest.raises(UserInputError, match=r"a\.npz: not a readable \.npz archive.*allow_pickle"):
        read_npz(tmp_path / "a.npz")


def test_npz_unknown_key_and_negative_label_are_refused(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 1], x_unlabelled=x)
    with pytest.raises(UserInputError, match=r"unexpected \['x_unlabelled'\]"):
        read_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, -1], x_test=x, y_test=[0, 1])
    with pytest.raises(UserInputError, match="y_train holds negative label -1"):
        read_npz(tmp_path / "a.npz")


def test_npz_class_names_fix_the_class_count(tmp_path):
    x = np.zeros((2, 4, 4), np.uint8)
    names = ["a", "b", "c"]
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[0, 1], class_names=names)
    arrays = read_npz(tmp_path / "a.npz")
    assert arrays.num_classes == 3 and arrays.class_names == ["a", "b", "c"]
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 3], x_test=x, y_test=[0, 1], class_names=names)
    with pytest.raises(UserInputError, match="labels reach 3 but class_names lists 3 classes"):
        read_npz(tmp_path / "a.npz")


def test_npz_truncated_archive_is_reported(tmp_path):
    write_npz(tmp_path / "toy.npz")
    truncate(tmp_path / "toy.npz", 0.5)
    with pytest.raises(UserInputError, match=r"toy\.npz: not a readable \.npz archive"):
        read_npz(tmp_path / "toy.npz")


# --------------------------------------------------------------------------------- common to every reader


@pytest.mark.parametrize(
    "read, url",
    [
        (read_cifar10, "https://www.cs.toronto.edu/~kriz/cifar.html"),
        (read_cifar100, "https://www.cs.toronto.edu/~kriz/cifar.html"),
        (read_svhn, "http://ufldl.stanford.edu/housenumbers/"),
        (read_stl10, "https://cs.stanford.edu/~acoates/stl10/"),
        (read_mnist_idx, "http://yann.lecun.com/exdb/mnist/"),
    ],
)
def test_empty_folder_gives_one_line_with_place_and_url(tmp_path, read, url):
    with pytest.raises(UserInputError) as info:
        read(tmp_path)
    message = str(info.value)
    assert "\n" not in message and url in message and str(tmp_path.absolute()) in message


def test_gzip_label_file_is_recognized_by_content_not_name(tmp_path):
    expected = write_mnist(tmp_path, gz=False)
    labels = tmp_path / MNIST_FILES["train_labels"]
    labels.write_bytes(gzip.compress(labels.read_bytes()))
    np.testing.assert_array_equal(read_mnist_idx(tmp_path, "mnist").y_train, expected.y_train)
