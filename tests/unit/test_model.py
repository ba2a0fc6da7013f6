"""Tests for template/protocol/model.py: deterministic init, shapes, causality, presets, fingerprint."""

from __future__ import annotations

import math

import pytest
import torch

from template.protocol.model import (
    PRESETS,
    ModelConfig,
    Transformer,
    autocast_context,
    build_model,
    count_parameters,
    model_fingerprint,
)

VOCAB, SEQ = 512, 32


def config_parameter_count(config: ModelConfig) -> int:
    """Parameters a model of this config has, by arithmetic: checks the presets without building them."""
    d, kv_dim = config.d_model, config.num_kv_heads * config.head_dim
    attention = d * d * 2 + d * kv_dim * 2  # wq, wo + wk, wv
    mlp = 3 * d * config.ffn_hidden  # gate, up, down
    per_layer = attention + mlp + 2 * d  # + two RMSNorm weights
    embeddings = config.vocab_size * d * (1 if config.tie_embeddings else 2)
    return config.num_layers * per_layer + embeddings + d  # + final norm


@pytest.fixture(autouse=True)
def one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny() -> Transformer:
    return build_model("tiny", VOCAB, SEQ, seed=0)


def test_same_seed_same_fingerprint_different_seed_differs(tiny: Transformer) -> None:
    again = build_model("tiny", VOCAB, SEQ, seed=0)
    other = build_model("tiny", VOCAB, SEQ, seed=1)
    assert model_fingerprint(again) == model_fingerprint(tiny)
    for (name, a), (_, b) in zip(tiny.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert model_fingerprint(other) != model_fingerprint(tiny)


def test_init_does_not_depend_on_global_rng() -> None:
    torch.manual_seed(123)
    first = build_model("tiny", VOCAB, SEQ, seed=7)
    torch.manual_seed(456)
    torch.rand(1000)
    second = build_model("tiny", VOCAB, SEQ, seed=7)
    assert model_fingerprint(first) == model_fingerprint(second)


def test_init_scales(tiny: Transformer) -> None:
    params = {name: p.detach() for name, p in tiny.named_parameters()}
    assert torch.equal(params["norm.weight"], torch.ones_like(params["norm.weight"]))
    emb_std = float(params["tok_embeddings.weight"].std())
    out_proj_std = float(params["layers.0.attention.wo.weight"].std())
    assert 0.018 < emb_std < 0.022
    # residual projections are scaled down by 1/sqrt(2 * num_layers)
    assert out_proj_std < emb_std / 2


def test_fingerprint_changes_when_a_weight_changes(tiny: Transformer) -> None:
    model = build_model("tiny", VOCAB, SEQ, seed=0)
    before = model_fingerprint(model)
    with torch.no_grad():
        model.layers[1].feed_forward.w_up.weight[3, 5] += 1e-6
    assert model_fingerprint(model) != before
    assert len(before) == 64 and int(before, 16) >= 0


def test_forward_shapes_and_finite_loss(tiny: Transformer) -> None:
    generator = torch.Generator().manual_seed(0)
    idx = torch.randint(0, VOCAB, (3, SEQ), generator=generator)
    targets = torch.randint(0, VOCAB, (3, SEQ), generator=generator)
    with torch.no_grad():
        logits, loss = tiny(idx, targets)
    assert logits.shape == (3, SEQ, VOCAB)
    assert loss is not None and loss.ndim == 0 and torch.isfinite(loss)
    # freshly initialised: close to uniform over the vocabulary on unrelated targets
    assert abs(float(loss) - math.log(VOCAB)) < 0.5
    logits_only, no_loss = tiny(idx[:, :10])
    assert logits_only.shape == (3, 10, VOCAB) and no_loss is None


def test_backward_reaches_every_parameter(tiny: Transformer) -> None:
    model = build_model("tiny", VOCAB, SEQ, seed=0)
    idx = torch.randint(0, VOCAB, (2, SEQ))
    _, loss = model(idx, idx)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_causal_future_token_does_not_change_earlier_logits(tiny: Transformer) -> None:
    idx = torch.randint(0, VOCAB, (2, SEQ))
    changed = idx.clone()
    changed[:, 20] = (changed[:, 20] + 1) % VOCAB
    with torch.no_grad():
        logits_a, _ = tiny(idx)
        logits_b, _ = tiny(changed)
    assert torch.allclose(logits_a[:, :20], logits_b[:, :20], atol=1e-5)
    assert not torch.allclose(logits_a[:, 20:], logits_b[:, 20:], atol=1e-5)


def test_tied_embeddings_listed_once(tiny: Transformer) -> None:
    names = [name for name, _ in tiny.named_parameters()]
    assert "tok_embeddings.weight" in names and "output.weight" not in names
    assert tiny.output.weight is tiny.tok_embeddings.weight
    assert count_parameters(tiny) == config_parameter_count(tiny.config)


def test_untied_and_grouped_query_attention_build_small() -> None:
    from dataclasses import replace

    config = replace(PRESETS["1B"], d_model=64, num_layers=2, num_heads=8, num_kv_heads=2, ffn_hidden=96,
                     vocab_size=100, max_seq_len=16, tie_embeddings=False)
    model = Transformer(config)
    assert count_parameters(model) == config_parameter_count(config)
    logits, loss = model(torch.randint(0, 100, (1, 16)), torch.randint(0, 100, (1, 16)))
    assert logits.shape == (1, 16, 100) and torch.isfinite(loss)


@pytest.mark.parametrize(
    ("preset", "low", "high"),
    [("tiny", 1.5e6, 4.5e6), ("150M", 130e6, 170e6), ("1B", 1.0e9, 1.4e9), ("8B", 7.5e9, 8.5e9),
     ("70B", 68e9, 72e9)],
)
def test_preset_parameter_counts(preset: str, low: float, high: float) -> None:
    assert low <= config_parameter_count(PRESETS[preset]) <= high


def test_tiny_built_count_matches_arithmetic() -> None:
    model = build_model("tiny", 8192, 128, seed=0)
    assert count_parameters(model) == config_parameter_count(PRESETS["tiny"])


def test_unknown_preset_names_valid_ones() -> None:
    with pytest.raises(ValueError, match="150M"):
        build_model("huge", VOCAB, SEQ, seed=0)


def test_sequence_longer_than_context_rejected(tiny: Transformer) -> None:
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny(torch.zeros(1, SEQ + 1, dtype=torch.long))


def test_autocast_context_is_noop_on_cpu(tiny: Transformer) -> None:
    idx = torch.randint(0, VOCAB, (1, 8))
    with autocast_context(torch.device("cpu")):
        logits, _ = tiny(idx)
    assert logits.dtype == torch.float32


def test_fingerprint_covers_bf16_weights_as_fp32() -> None:
    model = build_model("tiny", VOCAB, SEQ, seed=3)
    as_bf16 = build_model("tiny", VOCAB, SEQ, seed=3).to(torch.bfloat16)
    # same values after rounding to bf16 and back give the fingerprint of the rounded fp32 weights
    rounded = build_model("tiny", VOCAB, SEQ, seed=3)
    with torch.no_grad():
        for p in rounded.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    assert model_fingerprint(as_bf16) == model_fingerprint(rounded)
    assert model_fingerprint(as_bf16) != model_fingerprint(model)
