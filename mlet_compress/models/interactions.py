"""Pure tensor math of the feature-interaction layers (no modules, no state).

Shapes: B batch, F fields, d embedding dimension. Each function is the textbook formula, written
batched; the modules in :mod:`mlet_compress.models.layers` hold the parameters and call these.

Example:
    >>> v = torch.randn(2, 3, 4)
    >>> fm_cross_term(v).shape, bi_interaction(v).shape, dot_interaction(v).shape
    (torch.Size([2]), torch.Size([2, 4]), torch.Size([2, 3]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def dot_interaction(t: torch.Tensor) -> torch.Tensor:
    """DLRM dot interaction: pairwise dot products of N vectors, strictly-lower triangle.

    Args:
        t: [B, N, d].

    Returns:
        [B, N(N-1)/2]: ``<t_i, t_j>`` for i > j, row-major (i outer, j inner), as the DLRM reference.
    """
    n = t.shape[1]
    z = torch.bmm(t, t.transpose(1, 2))
    li, lj = torch.tril_indices(n, n, offset=-1, device=t.device)
    return z[:, li, lj]


def fm_cross_term(v: torch.Tensor) -> torch.Tensor:
    """FM second-order term Σ_{i<j} <v_i, v_j> = 0.5 Σ_d ((Σ_f v)² − Σ_f v²).

    Args:
        v: [B, F, d].

    Returns:
        [B].
    """
    return bi_interaction(v).sum(dim=1)


def bi_interaction(v: torch.Tensor) -> torch.Tensor:
    """NFM bi-interaction pooling Σ_{i<j} v_i ⊙ v_j = 0.5 ((Σ_f v)² − Σ_f v²), element-wise.

    Args:
        v: [B, F, d].

    Returns:
        [B, d].
    """
    s = v.sum(dim=1)
    return 0.5 * (s * s - (v * v).sum(dim=1))


def cross_layer(x0: torch.Tensor, xl: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One DCN cross layer (vector parameterisation): x_{l+1} = x0 · (x_lᵀ w) + b + x_l.

    Args:
        x0: [B, D] the layer-0 input.
        xl: [B, D] the current layer input.
        w: [D] kernel.
        b: [D] bias.

    Returns:
        [B, D].
    """
    return x0 * (xl @ w).unsqueeze(1) + b + xl


def cin_outer(h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """CIN feature-map outer product z[b, h*m, d] = h[b, h, d] · x0[b, m, d], flattened over (h, m).

    Args:
        h: [B, H, d] previous hidden feature maps.
        x0: [B, M, d] the field embeddings.

    Returns:
        [B, H*M, d].
    """
    b, hh, d = h.shape
    return torch.einsum("bhd,bmd->bhmd", h, x0).reshape(b, hh * x0.shape[1], d)


def multi_head_self_attention(
    x: torch.Tensor,
    w_query: torch.Tensor,
    w_key: torch.Tensor,
    w_value: torch.Tensor,
    head_num: int,
) -> torch.Tensor:
    """AutoInt multi-head self-attention over fields (unscaled dot product, softmax over keys).

    Args:
        x: [B, F, E] input field representations.
        w_query, w_key, w_value: [E, A*head_num] projections.
        head_num: number of heads H (each of size A).

    Returns:
        [B, F, A*head_num], heads concatenated along the last dimension.
    """
    b, f, _ = x.shape

    def heads(w: torch.Tensor) -> torch.Tensor:
        return (x @ w).view(b, f, head_num, -1).transpose(1, 2)  # [B, H, F, A]

    q, k, v = heads(w_query), heads(w_key), heads(w_value)
    scores = F.softmax(q @ k.transpose(-1, -2), dim=-1)  # [B, H, F, F]
    out = scores @ v  # [B, H, F, A]
    return out.transpose(1, 2).reshape(b, f, -1)


__all__ = [
    "dot_interaction",
    "fm_cross_term",
    "bi_interaction",
    "cross_layer",
    "cin_outer",
    "multi_head_self_attention",
]
