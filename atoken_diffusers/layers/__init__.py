"""Shared building blocks: varlen attention, 4D RoPE, the learned position table, norms, MLP, blocks, pooling."""

from .attention import AttentionPlan, varlen_attention
from .norms import LayerNorm32, QKNorm, RMSNorm32
from .pooling_head import AttentionPoolingHead
from .position_table import LearnedPositionTable
from .rope import RotaryTables, rope_frequencies
from .transformer_block import AttentionContext, SelfAttention, TransformerBlock

__all__ = [
    "AttentionContext", "AttentionPlan", "AttentionPoolingHead", "LayerNorm32", "LearnedPositionTable", "QKNorm",
    "RMSNorm32", "RotaryTables", "SelfAttention", "TransformerBlock", "rope_frequencies", "varlen_attention",
]
