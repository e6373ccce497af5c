"""Parameterised building blocks of the CTR models: MLP, DCN cross net, xDeepFM CIN, AutoInt layer.

The math lives in :mod:`mlet_compress.models.interactions`; these modules own parameters and their
initialisation (DeepCTR-Torch 0.2.x conventions unless noted).

Example:
    >>> mlp = MLP(8, (4, 2))
    >>> mlp(torch.randn(3, 8)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from mlet_compress.errors import ConfigError
from mlet_compress.models.embedding import is_int
from mlet_compress.models.interactions import cin_outer, cross_layer, multi_head_self_attention

MLP_INITS = ("deepctr", "dlrm")


def check_units(name: str, units: Sequence[int], allow_empty: bool = False) -> list[int]:
    """Validate a layer-size list (positive ints).

    Raises:
        ConfigError: a size is not a positive int, or the list is empty when not allowed.
    """
    out = list(units)
    if not out and not allow_empty:
        raise ConfigError(f"{name} is empty; give at least one layer size, e.g. (256, 128)")
    for u in out:
        if not is_int(u) or u < 1:
            raise ConfigError(f"{name} = {tuple(units)!r} holds {u!r}; layer sizes must be positive ints")
    return [int(u) for u in out]


class MLP(nn.Module):
    """Stack of Linear [-> BatchNorm] -> ReLU -> Dropout layers.

    Args:
        in_dim: input width.
        units: output width of each layer.
        dropout: dropout rate after each activation (DeepCTR default 0).
        use_bn: BatchNorm1d before each activation (DeepCTR default False).
        init: ``"deepctr"`` (weights N(0, init_std), PyTorch-default biases, as DeepCTR-Torch's DNN) or
            ``"dlrm"`` (W ~ N(0, sqrt(2/(in+out))), b ~ N(0, sqrt(1/out)), as the DLRM reference).
        init_std: weight std for ``init="deepctr"``.
        activate_last: apply ReLU (and dropout) after the last layer too; False for a logit head.

    Raises:
        ConfigError: bad sizes, dropout or init.
    """

    def __init__(
        self,
        in_dim: int,
        units: Sequence[int],
        *,
        dropout: float = 0.0,
        use_bn: bool = False,
        init: str = "deepctr",
        init_std: float = 1e-4,
        activate_last: bool = True,
    ) -> None:
        super().__init__()
        units = check_units("MLP units", units)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout = {dropout!r} must be in [0, 1)")
        if init not in MLP_INITS:
            raise ConfigError(f"MLP init {init!r} is unknown; use one of {list(MLP_INITS)}")
        dims = [in_dim] + units
        self.linears = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(len(units)))
        self.bns = nn.ModuleList(nn.BatchNorm1d(u) for u in units) if use_bn else None
        self.dropout = nn.Dropout(dropout)
        self.activate_last = activate_last
        with torch.no_grad():
            for lin in self.linears:
                if init == "deepctr":
                    lin.weight.normal_(0.0, init_std)
                else:
                    n_out, n_in = lin.weight.shape
                    lin.weight.normal_(0.0, math.sqrt(2.0 / (n_in + n_out)))
                    lin.bias.normal_(0.0, math.sqrt(1.0 / n_out))

    @property
    def out_dim(self) -> int:
        """Width of the output."""
        return self.linears[-1].out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_dim] -> [B, units[-1]]."""
        last = len(self.linears) - 1
        for i, lin in enumerate(self.linears):
            x = lin(x)
            if i == last and not self.activate_last:
                break
            if self.bns is not None:
                x = self.bns[i](x)
            x = self.dropout(torch.relu(x))
        return x


class CrossNet(nn.Module):
    """DCN cross network, vector parameterisation: x_{l+1} = x0 · (x_lᵀ w_l) + b_l + x_l.

    Kernels are Xavier-normal on a [D, 1] shape (std sqrt(2/(D+1))), biases zero, as DeepCTR-Torch.

    Args:
        in_dim: D, width of the input vector.
        num_layers: number of cross layers.
    """

    def __init__(self, in_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        std = math.sqrt(2.0 / (in_dim + 1))
        self.kernels = nn.ParameterList(nn.Parameter(torch.randn(in_dim) * std) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(in_dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, D] -> [B, D]."""
        x = x0
        for w, b in zip(self.kernels, self.biases):
            x = cross_layer(x0, x, w, b)
        return x


class CIN(nn.Module):
    """xDeepFM Compressed Interaction Network.

    Layer k maps the outer product of its input maps (H_{k-1}) and the fields (F) to ``layer_sizes[k]``
    maps with a 1x1 convolution and ReLU. With ``split_half`` every layer but the last sends half its
    maps on and half to the output; the output sums each kept map over the embedding dimension.

    Args:
        num_fields: F.
        layer_sizes: feature maps per layer (even except the last when ``split_half``).
        split_half: DeepCTR's ``cin_split_half``.

    Raises:
        ConfigError: empty sizes, or an odd size before the last layer with ``split_half``.
    """

    def __init__(self, num_fields: int, layer_sizes: Sequence[int] = (256, 128), split_half: bool = True) -> None:
        super().__init__()
        sizes = check_units("cin_layer_sizes", layer_sizes)
        self.split_half = split_half
        self.layer_sizes = sizes
        self.convs = nn.ModuleList()
        h = num_fields
        for i, size in enumerate(sizes):
            self.convs.append(nn.Conv1d(h * num_fields, size, kernel_size=1))
            if split_half and i < len(sizes) - 1:
                if size % 2:
                    raise ConfigError(
                        f"cin_layer_sizes = {tuple(sizes)} has odd size {size} before the last layer; "
                        "with split_half=True use even sizes"
                    )
                h = size // 2
            else:
                h = size

    @property
    def out_dim(self) -> int:
        """Number of output features: sum(sizes[:-1]) // 2 + sizes[-1] with split_half, else sum(sizes)."""
        if self.split_half:
            return sum(self.layer_sizes[:-1]) // 2 + self.layer_sizes[-1]
        return sum(self.layer_sizes)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """[B, F, d] -> [B, out_dim]."""
        h = x0
        kept = []
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            z = torch.relu(conv(cin_outer(h, x0)))  # [B, size, d]
            if self.split_half and i < last:
                h, direct = torch.split(z, z.shape[1] // 2, dim=1)
            else:
                h = direct = z
            kept.append(direct)
        return torch.cat(kept, dim=1).sum(dim=2)


class InteractingLayer(nn.Module):
    """AutoInt interacting layer: multi-head self-attention over fields, optional residual, ReLU.

    Projections are N(0, 0.05) as DeepCTR-Torch; unscaled scores, softmax over the keys (dim=-1) as
    current DeepCTR-Torch (some early 0.2.x releases normalised over dim=1, the batch axis: a bug).

    Args:
        in_dim: input width E per field.
        att_embedding_size: size A of each head.
        head_num: number of heads H.
        use_res: add a projected residual ``x @ W_res`` before the ReLU.

    Raises:
        ConfigError: non-positive sizes.
    """

    def __init__(self, in_dim: int, att_embedding_size: int = 8, head_num: int = 2, use_res: bool = True) -> None:
        super().__init__()
        sizes = check_units("att_embedding_size / att_head_num", (att_embedding_size, head_num))
        att_embedding_size, head_num = sizes
        self.head_num = head_num
        out = att_embedding_size * head_num
        self.w_query = nn.Parameter(torch.randn(in_dim, out) * 0.05)
        self.w_key = nn.Parameter(torch.randn(in_dim, out) * 0.05)
        self.w_value = nn.Parameter(torch.randn(in_dim, out) * 0.05)
        if use_res:
            self.w_res = nn.Parameter(torch.randn(in_dim, out) * 0.05)
        else:
            self.register_parameter("w_res", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F, E] -> [B, F, A*H]."""
        out = multi_head_self_attention(x, self.w_query, self.w_key, self.w_value, self.head_num)
        if self.w_res is not None:
            out = out + x @ self.w_res
        return torch.relu(out)


__all__ = ["MLP", "CrossNet", "CIN", "InteractingLayer", "check_units", "MLP_INITS"]
