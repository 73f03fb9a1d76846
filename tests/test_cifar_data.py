import functools
import hashlib
import http.server
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch
from helpers.config import compose_config

from deepres.data import cifar_files
from deepres.data.cifar import CifarDataModule
from deepres.data.cifar_files import read_split
from deepres.data.fake_cifar import write_cifar10, write_cifar100
from deepres.errors import UserError
from deepres.training.validate import check_data


def test_reads_the_official_layout(cifar10_root):
    x, y = read_split("cifar10", cifar10_root, train=True)
    assert x.shape == (1280, 3, 32, 32) and x.dtype == np.uint8 and y.shape == (1280,)
    x, y = read_split("cifar10", cifar10_root, train=False)
    assert x.shape == (320, 3, 32, 32)


def test_batches_are_python2_pickles(cifar10_root):
    """Like the official files: a plain pickle.load fails on them, the reader does not."""
    with pytest.raises(UnicodeDecodeError):
        with open(cifar10_root / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
            pickle.load(f)
    assert read_split("cifar10", cifar10_root, train=False)[1].dtype == np.int64


def test_cifar100_layout(tmp_path):
    write_cifar100(tmp_path)
    dm = CifarDataModule("cifar100", tmp_path, batch_size=50)
    dm.setup()
    assert dm.num_classes == 100 and len(dm.train_images) == 500 and int(dm.eval_sets[0][1].max()) < 100


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(UserError) as err:
        read_split("cifar10", tmp_path / "nowhere", train=True)
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "data.download=true" in msg
    assert f"data.root={tmp_path / 'nowhere'}" in msg and "cifar-10-python.tar.gz" in msg and "../" not in msg


def test_truncated_batch_names_the_file(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=20, test=20) / "cifar-10-batches-py"
    raw = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="data_batch_3.*corrupt or truncated"):
        read_split("cifar10", tmp_path, train=True)


def test_wrong_shape_and_bad_labels(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=20, test=20) / "cifar-10-batches-py"
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((20, 1000), np.uint8), "labels": [0] * 20}, f)
    with pytest.raises(UserError, match="test_batch.*shape \\(20, 1000\\)"):
        read_split("cifar10", tmp_path, train=False)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((20, 3072), np.uint8), "labels": [12] * 20}, f)
    with pytest.raises(UserError, match="labels in \\[12, 12\\].*0..9"):
        read_split("cifar10", tmp_path, train=False)


@pytest.fixture
def http_dir(tmp_path):
    """Serve tmp_path over HTTP on the loopback interface, like the archive's host."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_checks_the_archive_md5(tmp_path, http_dir, monkeypatch):
    """data.download fetches the archive, verifies its published md5, and unpacks it."""
    served, url = http_dir
    src = write_cifar10(tmp_path / "src", per_batch=8, test=8)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    layout = cifar_files.LAYOUTS["cifar10"]
    for md5, root in ((hashlib.md5(archive.read_bytes()).hexdigest(), "dl"), ("0" * 32, "dl2")):
        fields = {**layout.__dict__, "url": f"{url}/{archive.name}", "archive_md5": md5}
        monkeypatch.setitem(cifar_files.LAYOUTS, "cifar10", cifar_files.CifarLayout(**fields))
        if root == "dl":
            CifarDataModule("cifar10", tmp_path / root, download=True).prepare_data()
            assert read_split("cifar10", tmp_path / root, train=True)[0].shape[0] == 40
        else:
            (tmp_path / root).mkdir()  # a folder of the user's, which stays: the bad archive does not
            with pytest.raises(UserError, match="could not download"):
                CifarDataModule("cifar10", tmp_path / root, download=True).prepare_data()
            assert list((tmp_path / root).iterdir()) == []


def test_val_split_and_per_pixel_mean(cifar10_root):
    dm = CifarDataModule("cifar10", cifar10_root, val_size=256, batch_size=32)
    dm.setup()
    assert dm.eval_names == ["val", "test"]
    assert len(dm.train_images) == 1024 and len(dm.eval_sets[0][0]) == 256 and len(dm.eval_sets[1][0]) == 320
    train_rows = {tuple(r) for r in dm.train_images.flatten(1)[:, :64].tolist()}
    assert not any(tuple(r) in train_rows for r in dm.eval_sets[0][0].flatten(1)[:, :64].tolist())
    centred = dm.normalize(dm.train_images)
    assert centred.mean(0).abs().max() < 1e-5  # per-pixel: the mean image is subtracted


def test_per_channel_normalization(cifar10_root):
    dm = CifarDataModule("cifar10", cifar10_root, normalization="per_channel")
    dm.setup()
    x = dm.normalize(dm.train_images)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-3)
    with pytest.raises(UserError, match="per_pixel, per_channel"):
        CifarDataModule("cifar10", cifar10_root, normalization="zca").setup()


def serve_archive(tmp_path, served, url, monkeypatch, md5: str | None = None) -> None:
    """The CIFAR-10 archive of a generated data set at `url` (the official layout's url and md5 replaced)."""
    src = write_cifar10(tmp_path / "src", per_batch=8, test=8)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    fields = {**cifar_files.LAYOUTS["cifar10"].__dict__, "url": f"{url}/{archive.name}",
              "archive_md5": md5 or hashlib.md5(archive.read_bytes()).hexdigest()}
    monkeypatch.setitem(cifar_files.LAYOUTS, "cifar10", cifar_files.CifarLayout(**fields))


def test_the_default_config_fetches_missing_data_before_a_run_starts(tmp_path, http_dir, monkeypatch):
    """The README's first command on a fresh machine with network: data.download is on, and the data set is
    fetched (md5-checked) by the checks that run before anything of the run is created."""
    served, url = http_dir
    serve_archive(tmp_path, served, url, monkeypatch)
    cfg = compose_config(f"data.root={tmp_path / 'fresh'}")
    assert cfg.data.download is True
    check_data(cfg)
    assert read_split("cifar10", tmp_path / "fresh", train=False)[0].shape[0] == 8


def test_without_network_the_message_names_the_archive_to_fetch_elsewhere_not_the_download_switch(tmp_path,
                                                                                                 monkeypatch):
    fields = {**cifar_files.LAYOUTS["cifar10"].__dict__, "url": "http://127.0.0.1:9/cifar-10-python.tar.gz"}
    monkeypatch.setitem(cifar_files.LAYOUTS, "cifar10", cifar_files.CifarLayout(**fields))  # nothing listens
    with pytest.raises(UserError) as err:
        check_data(compose_config(f"data.root={tmp_path / 'fresh'}"))
    message = str(err.value)
    assert not (tmp_path / "fresh").exists()  # the run could not start: nothing of it is left
    assert "could not download cifar10" in message and "data.download=true" not in message
    assert f"download http://127.0.0.1:9/cifar-10-python.tar.gz on a machine with internet and unpack it into " \
           f"data.root={tmp_path / 'fresh'}, so that {tmp_path / 'fresh' / 'cifar-10-batches-py'} holds" in message
