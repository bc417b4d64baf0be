"""The decoder's shape: one dataclass, loadable from a preset YAML (configs/model/*.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

from pipelines.typed_config import NonNegativeInt, PositiveFloat, PositiveInt, Range


@dataclass
class ModelConfig:
    vocab_size: NonNegativeInt = 0  # 0 = take it from the tokenizer / shard manifest
    d_model: PositiveInt = 256
    n_layers: PositiveInt = 4
    n_heads: PositiveInt = 4
    n_kv_heads: PositiveInt = 4  # 1 = multi-query, n_heads = multi-head, in between = grouped-query attention
    ffn_hidden: NonNegativeInt = 0  # 0 = Llama's rule: 8/3 * d_model rounded up to a multiple of ffn_multiple_of
    ffn_multiple_of: PositiveInt = 64
    max_seq_len: PositiveInt = 256
    rope_theta: PositiveFloat = 10000.0
    norm_eps: PositiveFloat = 1e-5
    tie_embeddings: bool = True
    dropout: Annotated[float, Range(lo=0, hi=1, hi_open=True)] = 0.0
    init_std: PositiveFloat = 0.02

    def validate(self, key: str = "model") -> None:
        problems = []
        if self.d_model % self.n_heads:
            problems.append(f"d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        elif (self.d_model // self.n_heads) % 2:
            problems.append(f"head dim d_model/n_heads = {self.d_model // self.n_heads} must be even (RoPE rotates pairs)")
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            problems.append(f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if min(self.d_model, self.n_layers, self.n_heads, self.max_seq_len) < 1:
            problems.append("d_model, n_layers, n_heads and max_seq_len must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ValueError(f"{key}: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_dim(self) -> int:
        if self.ffn_hidden:
            return self.ffn_hidden
        hidden = int(8 * self.d_model / 3)
        m = self.ffn_multiple_of
        return m * ((hidden + m - 1) // m)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, key: str = "model") -> "ModelConfig":
        """Typed and checked: an unknown key, a wrong type (`n_layers: 2.5`, `tie_embeddings: "no"`) or a shape
        that does not work is a ConfigError (a ValueError) naming the key."""
        from pipelines.typed_config import from_dict

        return from_dict(cls, data, key)
