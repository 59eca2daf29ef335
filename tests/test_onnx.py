"""ONNX export and the ONNX Runtime backend: same ab as PyTorch, same files through the CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from colorgan.cli import main  # noqa: E402
from colorgan.errors import ModelLoadError  # noqa: E402
from colorgan.export import check_onnx, export_onnx, plain_model  # noqa: E402
from colorgan.onnx_backend import OnnxModel  # noqa: E402
from colorgan.pipeline import Colorizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tiny_weights):
    from colorgan.models.hub import load_model

    return load_model(tiny_weights)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_model, tmp_path_factory) -> Path:
    # The TorchScript exporter takes under a second on the tiny model; the default (dynamo)
    # exporter is covered by the slow test below and by `colorgan export` in the benchmark.
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_model, path, exporter="torchscript")


def _l_norm(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = torch.sin(7 * xx) * torch.cos(5 * yy)
    return (0.7 * base + 0.2 * torch.randn(b, 1, h, w, generator=g)).clamp(-1, 1)


def _grey(h=48, w=80, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0) + rng.normal(0, 0.05, (h, w))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (3, 1, 64, 96), (2, 1, 160, 64)])
def test_onnx_round_trip_matches_pytorch(tiny_model, tiny_onnx, shape):
    """Dynamic batch, height and width: every shape gives PyTorch's ab within 1e-3 (ab units)."""
    runner = OnnxModel(tiny_onnx, threads=1)
    x = _l_norm(*[shape[0], shape[2], shape[3]])
    with torch.no_grad():
        ref = tiny_model(x)
    got = runner(x)
    assert got.shape == ref.shape == (shape[0], 2, shape[2], shape[3])
    assert float((got - ref).abs().max()) * 110 < 1e-3
    assert float(ref.abs().max()) > 0.05  # a real, non-constant output was compared


def test_onnx_file_carries_its_metadata(tiny_onnx, tiny_model):
    runner = OnnxModel(tiny_onnx)
    assert runner.metadata["format"] == "colorgan-onnx"
    assert runner.stride == 32
    assert runner.config_dict["encoder"] == tiny_model.config.encoder
    with pytest.raises(ValueError, match="multiples of 32"):
        runner(torch.zeros(1, 1, 40, 64))


def test_check_detects_a_different_model(tiny_onnx):
    """The export check is not vacuous: another network's outputs are far outside tolerance."""
    from conftest import make_tiny_generator

    other = make_tiny_generator(seed=7)
    assert check_onnx(tiny_onnx, other) > 1e-2


def test_colorizer_onnx_backend_matches_torch(tiny_weights, tiny_onnx):
    torch_c = Colorizer.from_pretrained(tiny_weights, device="cpu")
    onnx_c = Colorizer.from_pretrained(tiny_onnx, device="cpu")  # backend chosen by suffix
    assert onnx_c.is_onnx and not torch_c.is_onnx
    L = torch.rand(2, 1, 70, 110) * 100
    ab_t = torch_c.predict_ab(L, 64)
    ab_o = onnx_c.predict_ab(L, 64)
    assert float((ab_t - ab_o).abs().max()) < 1e-3
    imgs = [_grey(48, 80, 0), _grey(64, 40, 1)]
    for a, b in zip(torch_c.colorize_batch(imgs, render_size=64), onnx_c.colorize_batch(imgs, render_size=64)):
        assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_backend_and_file_must_agree(tiny_weights, tiny_onnx):
    with pytest.raises(ModelLoadError, match="needs an .onnx file"):
        Colorizer.from_pretrained(tiny_weights, backend="onnx")
    with pytest.raises(ModelLoadError, match="ONNX backend"):
        Colorizer.from_pretrained(tiny_onnx, backend="torch")
    with pytest.raises(ValueError, match="float32"):
        Colorizer(OnnxModel(tiny_onnx), dtype=torch.bfloat16)


def test_foreign_and_corrupt_onnx_files_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "foreign",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ModelLoadError, match="not one exported by ColorGAN"):
        OnnxModel(foreign)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelLoadError, match="not a loadable ONNX model"):
        OnnxModel(corrupt)
    with pytest.raises(ModelLoadError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")


def test_plain_model_folds_spectral_norm_and_leaves_original_intact(tiny_model):
    from torch.nn.utils import parametrize

    assert any(parametrize.is_parametrized(m) for m in tiny_model.modules())
    plain = plain_model(tiny_model)
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    x = _l_norm(2, 64, 96)
    with torch.no_grad():
        assert torch.allclose(plain(x), tiny_model(x), atol=1e-6)
        tiny_model(x)  # the original still runs (its parametrisations were not removed)
    assert any(parametrize.is_parametrized(m) for m in tiny_model.modules())


def test_from_pretrained_runs_the_folded_model(tiny_weights, tiny_model):
    from torch.nn.utils import parametrize

    folded = Colorizer.from_pretrained(tiny_weights)
    assert not any(parametrize.is_parametrized(m) for m in folded.model.modules())
    unfolded = Colorizer(copy.deepcopy(tiny_model))
    L = torch.rand(2, 1, 64, 96) * 100
    assert float((folded.predict_ab(L, 64) - unfolded.predict_ab(L, 64)).abs().max()) < 1e-3


def _photo(path: Path, size=(72, 56), seed=0) -> Path:
    from conftest import write_photos

    return write_photos(path.parent, [_grey(size[1], size[0], seed)], path.name)[0]


def test_cli_export_then_colorize_with_onnx_backend(tmp_path, tiny_weights, capsys):
    model = tmp_path / "m.onnx"
    code = main(["export", "--format", "onnx", "-o", str(model), "--weights", str(tiny_weights), "--exporter", "torchscript"])
    assert code == 0, capsys.readouterr().err
    assert model.is_file()
    # An existing file is not replaced without --overwrite.
    code = main(["export", "-o", str(model), "--weights", str(tiny_weights), "--exporter", "torchscript"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert main(["export", "-o", str(tmp_path / "m.bin"), "--weights", str(tiny_weights)]) == 2

    src = tmp_path / "in"
    _photo(src / "a.png", seed=1)
    _photo(src / "b.png", size=(40, 64), seed=2)
    common = ["--render-size", "64", "-q"]
    assert main(["colorize", str(src), "-o", str(tmp_path / "o_onnx"), "--backend", "onnx", "--weights", str(model)] + common) == 0
    assert main(["colorize", str(src), "-o", str(tmp_path / "o_torch"), "--weights", str(tiny_weights)] + common) == 0
    for name in ("a.png", "b.png"):
        a = np.asarray(Image.open(tmp_path / "o_onnx" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "o_torch" / name)).astype(int)
        assert a.shape == b.shape and np.abs(a - b).max() <= 1
        assert np.abs(a[..., 0] - a[..., 2]).max() > 0  # coloured
    # --precision bf16 is for the PyTorch backend: a usage error, not a traceback.
    code = main(["colorize", str(src), "-o", str(tmp_path / "o_x"), "--weights", str(model), "--precision", "bf16"] + common)
    assert code == 2 and "float32" in capsys.readouterr().err


@pytest.mark.slow
def test_default_dynamo_exporter_round_trip(tmp_path, tiny_weights, tiny_model, capsys):
    """`colorgan export` with its default (torch.export-based) exporter; about 10-15 s."""
    model = tmp_path / "dyn.onnx"
    assert main(["export", "-o", str(model), "--weights", str(tiny_weights)]) == 0, capsys.readouterr().err
    runner = OnnxModel(model)
    assert runner.metadata["exporter"] == "dynamo"
    for b, h, w in [(1, 32, 64), (4, 96, 128)]:
        x = _l_norm(b, h, w, seed=b)
        with torch.no_grad():
            assert float((runner(x) - tiny_model(x)).abs().max()) * 110 < 1e-3


def test_onnx_export_keeps_the_per_image_gain_head(tiny_model, tmp_path):
    """A calibrated model with a per-image gain exports with it: per-image gains survive the round trip."""
    from colorgan.models.calibration import CalibratedGenerator, ChromaCalibration

    d = 2 * tiny_model.encoder.channels[4] + tiny_model.encoder.channels[3]
    w = torch.randn(d, generator=torch.Generator().manual_seed(3)) * 0.5
    adaptive = CalibratedGenerator(tiny_model, ChromaCalibration(gain=1.1, head_weight=tuple(w.tolist()), head_bias=0.1)).eval()
    path = export_onnx(adaptive, tmp_path / "adaptive.onnx", exporter="torchscript")
    x = _l_norm(3, 64, 96)
    with torch.no_grad():
        ref, plain = adaptive(x), tiny_model(x)
    got = OnnxModel(path, threads=1)(x)
    assert float((got - ref).abs().max()) * 110 < 1e-3
    gains = (ref.flatten(1).norm(dim=1) / plain.flatten(1).norm(dim=1))
    assert float(gains.max() - gains.min()) > 1e-3  # the head is active and differs per image
