"""LLaMA-style decoder-only transformer, small enough to read in one sitting.

The architecture is the one every node of the subnet trains: RMSNorm (pre-norm), rotary position
embeddings, grouped-query causal attention through ``F.scaled_dot_product_attention``, a SwiGLU MLP,
no biases and optionally tied input/output embeddings. Named size presets go from ``tiny`` (trains on
a laptop CPU in seconds) to ``70B`` (LLaMA-3-70B shapes, a config only).

Initialisation is a pure function of a seed: weights are drawn on the CPU from a seeded
``torch.Generator`` in ``named_parameters`` order, so every node that builds the same preset with the
same seed starts from bit-identical weights, which ``model_fingerprint`` proves.

This module holds the architecture only: no optimizer, data-parallel wrapping or I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the decoder. ``vocab_size`` and ``max_seq_len`` are overridden by ``build_model``."""

    d_model: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    ffn_hidden: int
    vocab_size: int = 32_000
    max_seq_len: int = 2048
    tie_embeddings: bool = False
    rope_theta: float = 10_000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if self.num_heads % self.num_kv_heads != 0:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be divisible by num_kv_heads ({self.num_kv_heads})"
            )
        if (self.d_model // self.num_heads) % 2 != 0:
            raise ValueError(f"head dim {self.d_model // self.num_heads} must be even for rotary embeddings")
        for name in ("d_model", "num_layers", "ffn_hidden", "vocab_size", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


# Shapes follow LLaMA-3 (1B = Llama-3.2-1B, 8B / 70B = Llama-3-8B / 70B). `tiny` is sized for the
# 2-core CPU demo: ~2M parameters, most of them in the tied 8192-token embedding.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        d_model=128, num_layers=4, num_heads=4, num_kv_heads=4, ffn_hidden=384,
        vocab_size=8192, max_seq_len=128, tie_embeddings=True,
    ),
    "150M": ModelConfig(
        d_model=768, num_layers=12, num_heads=12, num_kv_heads=12, ffn_hidden=2560,
        vocab_size=32_000, max_seq_len=2048,
    ),
    "1B": ModelConfig(
        d_model=2048, num_layers=16, num_heads=32, num_kv_heads=8, ffn_hidden=8192,
        vocab_size=128_256, max_seq_len=2048, tie_embeddings=True, rope_theta=500_000.0,
    ),
    "8B": ModelConfig(
        d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8, ffn_hidden=14_336,
        vocab_size=128_256, max_seq_len=2048, rope_theta=500_000.0,
    ),
    "70B": ModelConfig(
        d_model=8192, num_layers=80, num_heads=64, num_kv_heads=8, ffn_hidden=28_672,
        vocab_size=128_256, max_seq_len=2048, rope_theta=500_000.0,
    ),
}


def get_preset(preset: str) -> ModelConfig:
    """Return the named preset; raises ValueError naming the valid ones for an unknown name."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[preset]


class RMSNorm(nn.Module):
    """Root-mean-square layer norm with a learned gain and no bias."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32 for stability under bf16 autocast
        x_fp32 = x.float()
        normed = x_fp32 * torch.rsqrt(x_fp32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (max_seq_len, head_dim // 2), for rotary embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (even, odd) of the last dim of x (B, nh, T, hd) by position-dependent angles."""
    x_pairs = x.float().reshape(*x.shape[:-1], x.shape[-1] // 2, 2)  # (B, nh, T, hd/2, 2)
    x_even, x_odd = x_pairs[..., 0], x_pairs[..., 1]
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary embeddings."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        self.wq = nn.Linear(config.d_model, config.num_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.d_model, config.num_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.d_model, config.num_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.num_heads * config.head_dim, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)  # (B, nh, T, hd)
        k = self.wk(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        v = self.wv(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.num_kv_heads != self.num_heads:  # share each k/v head across a group of query heads
            repeats = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(repeats, dim=1), v.repeat_interleave(repeats, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hd)
        projected: torch.Tensor = self.wo(out.transpose(1, 2).reshape(batch, seq, -1))
        return projected


class FeedForward(nn.Module):
    """SwiGLU MLP: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w_up = nn.Linear(config.d_model, config.ffn_hidden, bias=False)
        self.w_down = nn.Linear(config.ffn_hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))
        return out


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attention = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.feed_forward = FeedForward(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        out: torch.Tensor = x + self.feed_forward(self.ffn_norm(x))
        return out


class Transformer(nn.Module):
    """The decoder. ``forward(idx, targets)`` returns (logits (B, T, V), mean cross-entropy or None)."""

    rope_cos: torch.Tensor  # (max_seq_len, head_dim // 2), buffers registered in __init__
    rope_sin: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.output = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            # one tensor under two names; named_parameters() lists it once (as tok_embeddings.weight)
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        # non-persistent: derived from the config, so not part of state_dict or the fingerprint
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx, targets: (B, T) token ids, T <= max_seq_len; targets of -1 are ignored in the loss."""
        seq = idx.shape[1]
        if seq > self.config.max_seq_len:
            raise ValueError(f"sequence length {seq} exceeds max_seq_len {self.config.max_seq_len}")
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        x = self.tok_embeddings(idx)  # (B, T, D)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.output(self.norm(x))  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-1
        )
        return logits, loss


@torch.no_grad()
def init_weights(model: Transformer, seed: int) -> None:
    """Seeded GPT-2/LLaMA-style init: N(0, std) everywhere, residual output projections scaled by
    1/sqrt(2 * num_layers), norm gains 1. Drawn on the CPU in named_parameters order so the result
    is bit-identical across machines and devices."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    std = model.config.init_std
    residual_std = std / math.sqrt(2 * model.config.num_layers)
    for name, param in model.named_parameters():
        if name.endswith("norm.weight"):
            values = torch.ones(param.shape)
        else:
            param_std = residual_std if name.endswith(("wo.weight", "w_down.weight")) else std
            values = torch.empty(param.shape).normal_(0.0, param_std, generator=generator)
        param.copy_(values)


def build_model(preset: str, vocab_size: int, seq_len: int, seed: int) -> Transformer:
    """Build the named preset on the CPU in fp32 with the given vocabulary and context length,
    initialised deterministically from ``seed``. Raises ValueError for an unknown preset."""
    config = replace(get_preset(preset), vocab_size=vocab_size, max_seq_len=seq_len)
    model = Transformer(config)
    init_weights(model, seed)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter elements (a tied tensor counts once)."""
    return sum(p.numel() for p in model.parameters())


def model_fingerprint(model: nn.Module) -> str:
    """The model fingerprint: sha256 hex of the parameters, the sync proof between nodes.

    For each parameter in ``model.named_parameters()`` order (registration order, not sorted;
    a tied tensor appears once, under its first name; buffers are left out) the hash is fed,
    with no separators or length prefixes:
    the name as UTF-8, then the Python ``repr`` of the shape tuple as ASCII (``"(8192, 128)"``,
    ``"(128,)"``), then the values cast to fp32, row-major, as little-endian 4-byte floats.
    Equal fingerprints mean bit-identical weights. This is not `artifacts.tensors_digest`
    (sorted names, JSON headers, dtype as held). Pinned vectors: tests/unit/test_fingerprint_vector.py.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        values = param.detach().to(device="cpu", dtype=torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(repr(tuple(values.shape)).encode())
        digest.update(values.numpy().astype("<f4", copy=False).tobytes())
    return digest.hexdigest()


def autocast_context(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA; a no-op context elsewhere (CPU runs stay in fp32)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
