"""Shared building blocks: attention kernels and the one attention layer, the one transformer block, 4D RoPE, the
learned position table, the sin/cos embedding, shifted windows, norms, MLP, pooling, the key/value cache."""

from .attention import AttentionPlan, dense_attention, varlen_attention
from .attention_layer import Attention, AttentionContext
from .kv_cache import KVCache
from .norms import LayerNorm32, QKNorm, RMSNorm32
from .pooling_head import AttentionPoolingHead
from .position_table import LearnedPositionTable
from .rope import RotaryTables, rope_frequencies
from .sincos import sincos_position_embedding
from .transformer_block import TransformerBlock, checkpoint_function, run_blocks
from .windows import window_partition

# The name self-attention had before one layer took on cross-attention too; kept for existing imports.
SelfAttention = Attention

__all__ = [
    "Attention", "AttentionContext", "AttentionPlan", "AttentionPoolingHead", "KVCache", "LayerNorm32",
    "LearnedPositionTable", "QKNorm", "RMSNorm32", "RotaryTables", "SelfAttention", "TransformerBlock",
    "checkpoint_function", "dense_attention", "rope_frequencies", "run_blocks", "sincos_position_embedding",
    "varlen_attention", "window_partition",
]
