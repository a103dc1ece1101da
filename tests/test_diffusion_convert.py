"""DiT against diffusers' DiTTransformer2DModel, and weights in the official DiT and
U-ViT / DC-AE release layouts against small re-implementations of the releases'
forwards written here from their code (facebookresearch/DiT ``models.py``, thu-ml/U-ViT
``libs/uvit.py``, mit-han-lab/efficientvit ``diffusioncore/models/uvit.py``)."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from latentae.cards import read_card
from latentae.cli import diffusion as diffusion_cli
from latentae.diffusion import DiT, DiTConfig, count_params, load, load_official, registry
from latentae.diffusion.convert import (
    dit_from_diffusers,
    dit_to_diffusers,
    from_diffusers,
    to_diffusers,
)
from latentae.errors import InputError

diffusers = pytest.importorskip("diffusers")
TINY = {"depth": 2, "hidden_size": 32, "num_heads": 4}  # architecture of the tiny weights


def randn(*shape, std=0.2, mean=0.0):
    """float64 values that float32 holds exactly (models load weights in float32, then
    are compared in float64 with the reference forwards)."""
    return (torch.randn(*shape) * std + mean).double()


# --- the releases' forwards, written from their code --------------------------------

def ref_timestep(t, dim):  # GLIDE embedding, both releases: cos then sin, freqs over
    half = dim // 2       # half, in float32 as the releases compute it
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).double()


def ref_sincos(dim, g):  # MAE get_2d_sincos_pos_embed: meshgrid(w, h), grid[0] first
    grid = torch.stack(torch.meshgrid(torch.arange(g), torch.arange(g), indexing="xy"))
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    parts = []
    for pos in grid.reshape(2, -1).double():
        out = pos[:, None] * omega[None]
        parts.append(torch.cat([out.sin(), out.cos()], dim=1))
    return torch.cat(parts, dim=1)[None]


def ref_attention(sd, pre, x, heads):  # timm Attention, explicit softmax
    b, n, d = x.shape
    qkv = F.linear(x, sd[pre + "qkv.weight"], sd.get(pre + "qkv.bias"))
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    a = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(-1)
    return F.linear((a @ v).transpose(1, 2).reshape(b, n, d), sd[pre + "proj.weight"],
                    sd[pre + "proj.bias"])


def ref_mlp(sd, pre, x, approximate):
    h = F.gelu(F.linear(x, sd[pre + "fc1.weight"], sd[pre + "fc1.bias"]),
               approximate=approximate)
    return F.linear(h, sd[pre + "fc2.weight"], sd[pre + "fc2.bias"])


def ref_unpatchify(x, p, c):  # "nhwpqc->nchpwq"
    b, n, _ = x.shape
    g = math.isqrt(n)
    x = torch.einsum("nhwpqc->nchpwq", x.reshape(b, g, g, p, p, c))
    return x.reshape(b, c, g * p, g * p)


def ref_dit(sd, x, t, y, p, heads):
    """DiT.forward of the release: x_embedder + pos_embed; c = t_embedder + y_embedder;
    adaLN-Zero blocks; final layer; unpatchify."""
    d = sd["pos_embed"].shape[-1]

    def lin(pre, h):
        return F.linear(h, sd[pre + ".weight"], sd[pre + ".bias"])

    def ln(h):
        return F.layer_norm(h, (d,), eps=1e-6)

    h = F.conv2d(x, sd["x_embedder.proj.weight"], sd["x_embedder.proj.bias"], stride=p)
    h = h.flatten(2).transpose(1, 2) + sd["pos_embed"]
    c = lin("t_embedder.mlp.2", F.silu(lin("t_embedder.mlp.0", ref_timestep(t, 256))))
    if "y_embedder.embedding_table.weight" in sd:  # efficientvit unconditional=True: none
        c = c + sd["y_embedder.embedding_table.weight"][y]
    i = 0
    while f"blocks.{i}.attn.qkv.weight" in sd:
        sm, cm, gm, sf, cf, gf = lin(f"blocks.{i}.adaLN_modulation.1", F.silu(c)).chunk(6, 1)
        h = h + gm[:, None] * ref_attention(sd, f"blocks.{i}.attn.",
                                            ln(h) * (1 + cm[:, None]) + sm[:, None], heads)
        h = h + gf[:, None] * ref_mlp(sd, f"blocks.{i}.mlp.",
                                      ln(h) * (1 + cf[:, None]) + sf[:, None], "tanh")
        i += 1
    shift, scale = lin("final_layer.adaLN_modulation.1", F.silu(c)).chunk(2, 1)
    h = lin("final_layer.linear", ln(h) * (1 + scale[:, None]) + shift[:, None])
    return ref_unpatchify(h, p, h.shape[-1] // (p * p))


def ref_uvit(sd, x, t, y, p, heads, label_key):
    """UViT.forward of the releases: time token (then label token before it), pos_embed,
    in-blocks -> mid -> out-blocks with skip_linear on [x, skip], norm, decoder_pred,
    drop the extra tokens, unpatchify, optional 3x3 conv."""
    d = sd["pos_embed"].shape[-1]

    def lin(pre, h):
        return F.linear(h, sd[pre + ".weight"], sd[pre + ".bias"])

    def ln(pre, h):
        return F.layer_norm(h, (d,), sd[pre + ".weight"], sd[pre + ".bias"])

    def block(pre, h, skip=None):
        if skip is not None:
            h = lin(pre + "skip_linear", torch.cat([h, skip], dim=-1))
        h = h + ref_attention(sd, pre + "attn.", ln(pre + "norm1", h), heads)
        return h + ref_mlp(sd, pre + "mlp.", ln(pre + "norm2", h), "none")

    h = F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=p)
    h = h.flatten(2).transpose(1, 2)
    time = ref_timestep(t, d)
    if "time_embed.0.weight" in sd:
        time = lin("time_embed.2", F.silu(lin("time_embed.0", time)))
    tokens = [time[:, None], h]
    if label_key in sd:
        tokens.insert(0, sd[label_key][y][:, None])
    h = torch.cat(tokens, 1) + sd["pos_embed"]
    depth = len({k.split(".")[1] for k in sd if k.startswith("in_blocks.")})
    skips = []
    for i in range(depth):
        h = block(f"in_blocks.{i}.", h)
        skips.append(h)
    h = block("mid_block.", h)
    for i in range(depth):
        h = block(f"out_blocks.{i}.", h, skips.pop())
    h = lin("decoder_pred", ln("norm", h))[:, len(tokens) - 1:]
    out = ref_unpatchify(h, p, h.shape[-1] // (p * p))
    if "final_layer.weight" in sd:
        out = F.conv2d(out, sd["final_layer.weight"], sd["final_layer.bias"], padding=1)
    return out


# --- official state dicts, named as the releases name their modules -----------------

def official_dit(depth=2, d=32, c=3, p=2, classes=5, size=8, sigma=True, rows=None):
    """Keys of facebookresearch/DiT models.py: x_embedder (timm PatchEmbed .proj),
    t_embedder.mlp.{0,2}, y_embedder.embedding_table (num_classes + 1 rows with label
    dropout), pos_embed (1, T, D), blocks.i.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2,
    adaLN_modulation.1}, final_layer.{linear, adaLN_modulation.1}; LayerNorms have no
    parameters (elementwise_affine=False)."""
    out = 2 * c if sigma else c
    sd = {"x_embedder.proj.weight": randn(d, c, p, p), "x_embedder.proj.bias": randn(d),
          "t_embedder.mlp.0.weight": randn(d, 256), "t_embedder.mlp.0.bias": randn(d),
          "t_embedder.mlp.2.weight": randn(d, d), "t_embedder.mlp.2.bias": randn(d),
          "y_embedder.embedding_table.weight": randn(classes + 1 if rows is None else rows, d),
          "pos_embed": ref_sincos(d, size // p).float().double(),
          "final_layer.linear.weight": randn(p * p * out, d),
          "final_layer.linear.bias": randn(p * p * out),
          "final_layer.adaLN_modulation.1.weight": randn(2 * d, d),
          "final_layer.adaLN_modulation.1.bias": randn(2 * d)}
    for i in range(depth):
        for name, (o, n) in {"attn.qkv": (3 * d, d), "attn.proj": (d, d),
                             "mlp.fc1": (4 * d, d), "mlp.fc2": (d, 4 * d),
                             "adaLN_modulation.1": (6 * d, d)}.items():
            sd[f"blocks.{i}.{name}.weight"] = randn(o, n)
            sd[f"blocks.{i}.{name}.bias"] = randn(o)
    if rows == 0:  # efficientvit DiT(unconditional=True): no y_embedder at all
        del sd["y_embedder.embedding_table.weight"]
    return sd


def official_uvit(release, depth=2, d=32, c=3, p=1, classes=5, size=4, conv=False,
                  time_mlp=False):
    """Keys of U-ViT's libs/uvit.py (``release="uvit"``: label_emb is an nn.Embedding of
    num_classes=1001-style rows incl. null; final_layer a 3x3 conv when conv=True) or of
    DC-AE's uvit.py (``"dcae"``: label_emb.embedding_table, no final conv): patch_embed.
    proj, time_embed.{0,2} (mlp_time_embed), pos_embed (1, extras + T, D), in_blocks.i /
    mid_block / out_blocks.i with norm1, attn.qkv (qkv_bias=False), attn.proj, norm2,
    mlp.fc1, mlp.fc2 and (out-blocks) skip_linear, then norm and decoder_pred."""
    label = "label_emb.weight" if release == "uvit" else "label_emb.embedding_table.weight"
    sd = {"patch_embed.proj.weight": randn(d, c, p, p), "patch_embed.proj.bias": randn(d),
          "pos_embed": randn(1, (2 if classes else 1) + (size // p) ** 2, d),
          "norm.weight": randn(d, mean=1.0), "norm.bias": randn(d),
          "decoder_pred.weight": randn(p * p * c, d), "decoder_pred.bias": randn(p * p * c)}
    if classes:  # unconditional: no label token (extras = 1)
        sd[label] = randn(classes + 1, d)
    if time_mlp:
        sd.update({"time_embed.0.weight": randn(4 * d, d), "time_embed.0.bias": randn(4 * d),
                   "time_embed.2.weight": randn(d, 4 * d), "time_embed.2.bias": randn(d)})
    if conv:
        sd.update({"final_layer.weight": randn(c, c, 3, 3), "final_layer.bias": randn(c)})
    blocks = ([f"in_blocks.{i}." for i in range(depth // 2)] + ["mid_block."]
              + [f"out_blocks.{i}." for i in range(depth // 2)])
    for pre in blocks:
        sd.update({pre + "norm1.weight": randn(d, mean=1.0), pre + "norm1.bias": randn(d),
                   pre + "norm2.weight": randn(d, mean=1.0), pre + "norm2.bias": randn(d),
                   pre + "attn.qkv.weight": randn(3 * d, d),
                   pre + "attn.proj.weight": randn(d, d), pre + "attn.proj.bias": randn(d),
                   pre + "mlp.fc1.weight": randn(4 * d, d), pre + "mlp.fc1.bias": randn(4 * d),
                   pre + "mlp.fc2.weight": randn(d, 4 * d), pre + "mlp.fc2.bias": randn(d)})
        if pre.startswith("out_blocks"):
            sd[pre + "skip_linear.weight"] = randn(d, 2 * d)
            sd[pre + "skip_linear.bias"] = randn(d)
    return sd, label


def batch(c, size, classes):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, c, size, size, generator=g, dtype=torch.float64)
    return x, torch.tensor([0.0, 123.0, 999.0]), torch.tensor([0, 3, classes])


# --- diffusers ----------------------------------------------------------------------

def tiny_random_dit(sigma=True):
    model = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=2,
                          num_heads=4, num_classes=5, learn_sigma=sigma)).eval()
    with torch.no_grad():  # non-zero everywhere: adaLN-Zero and the head start at zero
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape) * 0.2)
    return model


@pytest.mark.parametrize("sigma", [True, False])
def test_dit_matches_diffusers_dit_transformer(sigma):
    model = tiny_random_dit(sigma)
    theirs = to_diffusers(model).eval()
    x, t, y = (v.float() if v.is_floating_point() else v for v in batch(3, 8, 5))
    with torch.no_grad():
        ours = model(x, t, y)
        out = theirs(x, timestep=t, class_labels=y).sample
        assert ours.abs().mean() > 0.1  # a comparison that can fail
        assert (out - ours).abs().max() <= 1e-5
        # Stock diffusers embeds timesteps with frequencies over half-1 (not the release's)
        stock = to_diffusers(model, release_timesteps=False).eval()
        assert (stock(x, timestep=t, class_labels=y).sample - ours).abs().max() > 1e-3


def test_diffusers_state_dict_roundtrip_and_shared_embedder():
    model = tiny_random_dit()
    sd = dit_to_diffusers(model.state_dict(), depth=2)
    back = dit_from_diffusers(sd, model.config)
    assert back.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0)
    rebuilt = from_diffusers(to_diffusers(model))
    assert rebuilt.config == model.config
    sd["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"] += 1
    with pytest.raises(InputError, match="differ"):
        dit_from_diffusers(sd, model.config)


# --- official layouts ---------------------------------------------------------------

@pytest.mark.parametrize("sigma", [True, False])
def test_official_dit_weights_give_the_release_forward(sigma):
    sd = official_dit(sigma=sigma)
    model = load_official({"model": sd}, "dit-s", patch_size=2, input_size=8, in_channels=3,
                          num_classes=5, **TINY).double().eval()
    assert model.config.learn_sigma is sigma and model.config.hidden_size == 32
    x, t, y = batch(3, 8, 5)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y), ref_dit(sd, x, t, y, p=2, heads=4),
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("release,conv,time_mlp,classes", [("uvit", True, False, 5),
                                                           ("uvit", False, True, 5),
                                                           ("uvit", False, False, 0),
                                                           ("dcae", False, False, 5)])
def test_official_uvit_weights_give_the_release_forward(release, conv, time_mlp, classes):
    sd, label = official_uvit(release, conv=conv, time_mlp=time_mlp, classes=classes)
    ckpt = ({"ema": {"ema_0.9999": {"uvit." + k: v for k, v in sd.items()}}}
            if release == "dcae" else sd)  # DC-AE nests ModuleDict({"uvit": model})
    model = load_official(ckpt, "uvit-s", patch_size=1, input_size=4, in_channels=3,
                          num_classes=classes, **{**TINY, "num_heads": 8}).double().eval()
    assert (model.config.final_conv, model.config.mlp_time_embed) == (conv, time_mlp)
    x, t, y = batch(3, 4, 5)
    y = y if classes else None
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y),
                                   ref_uvit(sd, x, t, y, p=1, heads=8, label_key=label),
                                   rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layout", ["efficientvit-train", "efficientvit-hf", "ddp"])
@pytest.mark.parametrize("classes,rows", [(5, 6), (5, 5), (0, 0), (0, 1)])
def test_official_dit_layouts_and_label_tables(layout, classes, rows, tmp_path):
    """efficientvit's DiT checkpoints (training: {"ema": {name: {"dit.<key>"}}}; Hugging
    Face DCAE_Diffusion_HF: "diffusion_model.<key>"), DDP's "module.", and the label
    tables: K + 1 rows (null class), K (trained without label dropout: no guidance),
    none (efficientvit unconditional=True) and latentae's unconditional DiT (1 null row)."""
    sd = official_dit(classes=classes, rows=rows)
    ckpt = {"efficientvit-train": {"ema": {"ema_0.9999": {"dit." + k: v
                                                          for k, v in sd.items()}}},
            "efficientvit-hf": {"diffusion_model." + k: v for k, v in sd.items()},
            "ddp": {"model": {"module." + k: v for k, v in sd.items()}}}[layout]
    model = load_official(ckpt, "dit-s", patch_size=2, input_size=8, in_channels=3,
                          num_classes=classes, **TINY)
    assert not model.training  # eval mode: no label dropout when sampling
    assert model.config.null_class is (rows == classes + 1)
    model = model.double()
    x, t, y = batch(3, 8, 5)
    y = torch.tensor([0, 3, 4]) if classes else torch.zeros(3, dtype=torch.long)
    with torch.no_grad():
        ours = model(x, t, y if classes else None)
        torch.testing.assert_close(ours, ref_dit(sd, x, t, y, p=2, heads=4),
                                   rtol=1e-9, atol=1e-9)
    if classes and rows == classes:
        with pytest.raises(InputError, match="no null class"):
            model(x, t, None)
    model.save_pretrained(tmp_path / "m")  # the layout survives a save and load
    back = load(tmp_path / "m")
    assert back.config == model.config


def test_dit_patch_bias_starts_at_zero_as_in_the_release():
    model = DiT(DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=32, depth=1,
                          num_heads=4, num_classes=5))
    assert torch.count_nonzero(model.x_embedder.proj.bias) == 0
    assert torch.count_nonzero(model.x_embedder.proj.weight) > 0


def test_official_weights_that_do_not_fit_are_input_errors():
    sd = official_dit()
    cases = [({"depth": 3}, "depth 2; preset dit-s has 32 and 3"),
             ({"num_classes": 7}, "--num-classes 5 \\(a null row last\\) or 6"),
             ({"in_channels": 4}, "3 channels"),
             ({"input_size": 16}, "input-size"), ({"patch_size": 4}, "2x2 patches")]
    for change, match in cases:
        kwargs = {"name": "dit-s", "patch_size": 2, "input_size": 8, "in_channels": 3,
                  "num_classes": 5, **TINY, **change}
        with pytest.raises(InputError, match=match):
            load_official(sd, **kwargs)
    with pytest.raises(InputError, match="width 32 and depth 2; preset dit-b has 768"):
        load_official(sd, "dit-b", 2, 8, 3, 5)
    with pytest.raises(InputError, match="not a DiT"):
        load_official(official_uvit("uvit")[0], "dit-s", 1, 4, 3, 5)
    with pytest.raises(InputError, match="state dict"):
        load_official({"model": {"a": 1}}, "dit-s", 2, 8, 3, 5)
    with pytest.raises(InputError, match="4 \\(a null row last\\) or 5"):
        load_official(official_dit(rows=5), "dit-s", 2, 8, 3, 3, **TINY)
    post = {**sd, "blocks.0.adaLN_modulation.1.weight": randn(4 * 32, 32)}
    with pytest.raises(InputError, match="post-norm"):
        load_official(post, "dit-s", 2, 8, 3, 5, **TINY)


# --- CLI ----------------------------------------------------------------------------

def run_convert(argv):
    parser = argparse.ArgumentParser()
    diffusion_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["diffusion", "convert", *argv])
    return args.func(args)


def test_cli_converts_a_dit_release_training_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(registry._PRESETS, "dit-tiny", ("dit", TINY))  # --model dit-tiny
    sd = official_dit()
    # The release's train.py saves {"model", "ema", "opt", "args": argparse.Namespace}.
    torch.save({"model": {k: v * 0 for k, v in sd.items()}, "ema": sd, "opt": {},
                "args": argparse.Namespace(model="DiT-S/2")}, tmp_path / "0001.pt")
    flags = ["--model", "dit-tiny", "--patch-size", "2", "--input-size", "8", "--in-channels",
             "3", "--num-classes", "5"]
    assert run_convert([str(tmp_path / "0001.pt"), str(tmp_path / "out"), *flags]) == 0
    assert "learned sigma on" in capsys.readouterr().out
    card = read_card(tmp_path / "out")[0]  # the converted folder has its model card
    assert (card["kind"], card["family"], card["preset"]) == ("diffusion", "dit", "dit-tiny")
    assert (card["patch_size"], card["latent_size"], card["latent_channels"]) == (2, 8, 3)
    assert card["num_classes"] == 5 and card["learn_sigma"] and card["tokens"] == 16
    model = load(tmp_path / "out").double().eval()
    assert card["parameters"] == {"total": count_params(model)}
    x, t, y = batch(3, 8, 5)
    with torch.no_grad():  # the EMA weights were taken
        torch.testing.assert_close(model(x, t, y), ref_dit(sd, x, t, y, p=2, heads=4))
    with pytest.raises(InputError, match="not empty"):
        run_convert([str(tmp_path / "0001.pt"), str(tmp_path / "out"), *flags])
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        run_convert([str(tmp_path / "bad.pt"), str(tmp_path / "o2"), *flags])
    with pytest.raises(InputError, match="no such file"):
        run_convert([str(tmp_path / "missing.pt"), str(tmp_path / "o3"), *flags])
