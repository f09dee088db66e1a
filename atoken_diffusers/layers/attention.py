"""Attention kernels: packed variable-length sequences (:func:`varlen_attention`) and dense batches
(:func:`dense_attention`).

Every attention in the project (encoder/decoder self-attention per sample and temporal tile, the key/value-cached
decoder tiles, the pooling head's one query per sample) is "queries of group g attend to keys of group g". A
:class:`AttentionPlan` describes the groups once per forward pass; :func:`varlen_attention` runs them with
flash-attn's varlen kernel when it is importable and the tensors are half precision on CUDA, and otherwise with
``scaled_dot_product_attention`` on a padded (groups, length) layout (a plain reshape when all groups have the
same length, which is the case for dense image/video batches). Dense (B, heads, S, head_dim) batches -- the
autoregressive model, the DiT -- go straight to ``scaled_dot_product_attention``, causally when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

try:  # optional fast path on CUDA
    from flash_attn import flash_attn_varlen_func  # type: ignore
except Exception:  # pragma: no cover - flash-attn is not installed on CPU machines
    flash_attn_varlen_func = None


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return F.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)


@dataclass(eq=False)
class AttentionPlan:
    """Query and key groups of a packed attention call.

    Args:
        q_lengths: (G,) number of queries of each group; queries are stored group after group.
        k_lengths: (G,) number of keys of each group (defaults to ``q_lengths``: keys are the queries' own tokens).
        key_index: (Nk,) optional row index, into the per-token key/value tensor, of every key entry, group after
            group. Used when a token serves as key in more than one group (the decoder's cross-tile cache).
    """

    q_lengths: torch.Tensor
    k_lengths: torch.Tensor | None = None
    key_index: torch.Tensor | None = None

    def __post_init__(self):
        if self.k_lengths is None:
            self.k_lengths = self.q_lengths
        self.cu_q = _offsets(self.q_lengths)
        self.cu_k = _offsets(self.k_lengths)
        # Python ints once per plan (one host sync), reused by every layer. Plans of dense grids come from
        # :meth:`from_lengths`, which knows them without looking at the tensors.
        self.max_q = int(self.q_lengths.max()) if self.q_lengths.numel() else 0
        self.max_k = int(self.k_lengths.max()) if self.k_lengths.numel() else 0
        self.uniform = bool(
            (self.q_lengths == self.max_q).all() and (self.k_lengths == self.max_k).all() and self.key_index is None
        )
        self.total_q = None

    @classmethod
    def from_lengths(cls, lengths: list[int], device=None) -> "AttentionPlan":
        """Self-attention groups whose lengths are known on the host (dense grids): no device-to-host sync, and
        every size a Python value (or a symbolic one under ``torch.compile``/``torch.export``), so the plan traces
        into one graph."""
        plan = cls.__new__(cls)
        plan.q_lengths = plan.k_lengths = torch.tensor(lengths, device=device)
        plan.key_index = None
        plan.cu_q = plan.cu_k = _offsets(plan.q_lengths)
        plan.max_q = plan.max_k = max(lengths)
        plan.uniform = all(n == lengths[0] for n in lengths)
        plan.total_q = sum(lengths)
        return plan

    @property
    def num_groups(self) -> int:
        return self.q_lengths.shape[0]

    def gather_keys(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token keys/values (N, ...) -> key entries (Nk, ...)."""
        return x if self.key_index is None else x[self.key_index]

    @cached_property
    def _q_pad_index(self) -> torch.Tensor:
        return _pad_index(self.q_lengths, self.cu_q, self.max_q, self.total_q)

    @cached_property
    def _k_pad_index(self) -> torch.Tensor:
        return _pad_index(self.k_lengths, self.cu_k, self.max_k, self.total_q)

    @cached_property
    def _key_mask(self) -> torch.Tensor:
        """(G, 1, 1, max_k) True where a padded key slot holds a real key."""
        ar = torch.arange(self.max_k, device=self.k_lengths.device)
        return (ar[None, :] < self.k_lengths[:, None])[:, None, None, :]


def _pad_index(lengths: torch.Tensor, offsets: torch.Tensor, max_len: int, total: int | None = None) -> torch.Tensor:
    group = torch.repeat_interleave(torch.arange(lengths.shape[0], device=lengths.device), lengths, output_size=total)
    pos = torch.arange(group.shape[0], device=lengths.device) - offsets[group].long()
    return group * max_len + pos


def _to_padded(x: torch.Tensor, index: torch.Tensor, groups: int, length: int) -> torch.Tensor:
    out = x.new_zeros(groups * length, *x.shape[1:])
    out[index] = x
    return out.view(groups, length, *x.shape[1:])


def _softcapped_attention(q, k, v, mask, softcap: float) -> torch.Tensor:
    """Explicit attention for soft-capped logits (cap * tanh(logits / cap)), which SDPA cannot express."""
    logits = (q.float() @ k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    logits = softcap * torch.tanh(logits / softcap)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return (logits.softmax(-1) @ v.float()).to(q.dtype)


def varlen_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, plan: AttentionPlan, softcap: float | None = None
) -> torch.Tensor:
    """Softmax attention within groups, scale 1/sqrt(head_dim).

    Args:
        q: (Nq, heads, head_dim) queries, group after group as ``plan.q_lengths`` says.
        k, v: (Nk, heads, head_dim) key entries, group after group as ``plan.k_lengths`` says.
        softcap: optional logit soft-capping value.
    Returns:
        (Nq, heads, head_dim).
    """
    if (
        flash_attn_varlen_func is not None
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] <= 256
    ):
        return flash_attn_varlen_func(
            q, k, v, plan.cu_q, plan.cu_k, plan.max_q, plan.max_k, softcap=softcap or 0.0
        )

    g = plan.num_groups
    if plan.uniform:
        qp, kp, vp = (x.reshape(g, -1, *x.shape[1:]) for x in (q, k, v))
        mask = None
    else:
        qp = _to_padded(q, plan._q_pad_index, g, plan.max_q)
        kp = _to_padded(k, plan._k_pad_index, g, plan.max_k)
        vp = _to_padded(v, plan._k_pad_index, g, plan.max_k)
        mask = plan._key_mask
    qp, kp, vp = (x.transpose(1, 2) for x in (qp, kp, vp))  # (G, heads, L, head_dim)
    if softcap:
        out = _softcapped_attention(qp, kp, vp, mask, softcap)
    else:
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=mask)
    out = out.transpose(1, 2)  # (G, L, heads, head_dim)
    if plan.uniform:
        return out.reshape(q.shape)
    return out.reshape(g * plan.max_q, *out.shape[2:])[plan._q_pad_index]


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False, softcap: float | None = None
) -> torch.Tensor:
    """Softmax attention over dense batches, scale 1/sqrt(head_dim).

    Args:
        q: (B, heads, Sq, head_dim) queries.
        k, v: (B, heads, Sk, head_dim) keys/values, Sk >= Sq.
        causal: query i sees keys 0 .. Sk - Sq + i: the queries are the last Sq positions of the keys (the new
            positions after a key/value cache of Sk - Sq, or the whole sequence when Sk == Sq).
        softcap: optional logit soft-capping value.
    Returns:
        (B, heads, Sq, head_dim).
    """
    sq, sk = q.shape[-2], k.shape[-2]
    # Sizes are Python ints (shapes), so these branches never read tensor data.
    if causal and sq == sk and not softcap:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    mask = None
    if causal and sq > 1:  # one new query sees every cached key: no mask needed
        mask = torch.ones(sq, sk, dtype=torch.bool, device=q.device).tril(sk - sq)
    if softcap:
        return _softcapped_attention(q, k, v, mask, softcap)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
