"""DeepCTR-Torch interop (the `[deepctr]` extra): wrap before compile(), fix the L2 list, train, collapse.

The real-DeepCTR test is skipped when ``deepctr_torch`` is not installed (its ``basemodel`` also
imports TensorFlow's Keras callbacks); the structural test of ``wrap_deepctr`` always runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from torch import nn

from mlet_compress import MLETConfig, collapse
from mlet_compress.train import wrap_deepctr


class DeepCTRLike(nn.Module):
    """The structure wrap_deepctr relies on: DeepCTR-Torch's BaseModel builds regularization_weight from
    the embedding parameters at construction (plain parameters and (name, parameter) pairs)."""

    def __init__(self):
        super().__init__()
        self.embedding_dict = nn.ModuleDict({"a": nn.Embedding(30, 4), "b": nn.Embedding(20, 4)})
        self.linear_model = nn.Module()
        self.linear_model.embedding_dict = nn.ModuleDict({"a": nn.Embedding(30, 1)})
        self.dnn = nn.Linear(8, 1)
        self.regularization_weight = [
            (list(self.embedding_dict.parameters()), 0.0, 1e-5),
            (list(self.linear_model.parameters()), 0.0, 1e-5),
            (list(self.named_parameters()), 0.0, 1e-4),
        ]

    def get_regularization_loss(self):
        total = torch.zeros(())
        for ws, _, l2 in self.regularization_weight:
            for w in ws:
                total = total + l2 * (w[1] if isinstance(w, tuple) else w).pow(2).sum()
        return total


def test_wrap_deepctr_repoints_the_regularization_list():
    torch.manual_seed(0)
    model = DeepCTRLike()
    old = {id(m.weight) for m in model.embedding_dict.values()}
    wrap_deepctr(model, MLETConfig(inner_dim=8))
    emb_entry, lin_entry, named_entry = model.regularization_weight
    new = [model.embedding_dict["a"].table, model.embedding_dict["a"].proj,
           model.embedding_dict["b"].table, model.embedding_dict["b"].proj]
    assert [id(p) for p in emb_entry[0]] == [id(p) for p in new]
    assert lin_entry[0] == [model.linear_model.embedding_dict["a"].weight]  # 1-dim table not wrapped
    names = [n for n, _ in named_entry[0]]
    assert "embedding_dict.a.table" in names and "embedding_dict.b.proj" in names
    assert not old & {id(w[1]) for w in named_entry[0]}
    reg = model.get_regularization_loss()
    reg.backward()
    assert model.embedding_dict["a"].proj.grad is not None  # the L2 term now reaches the factors


def _data(SparseFeat, DenseFeat, n=512, fields=3, vocab=40, seed=0):
    rng = np.random.default_rng(seed)
    x = {f"C{i}": rng.integers(0, vocab, n) for i in range(fields)}
    x["I0"] = rng.normal(size=n).astype(np.float32)
    logit = (x["C0"] % 3 - 1) + 0.5 * x["I0"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cols = [SparseFeat(f"C{i}", vocabulary_size=vocab, embedding_dim=4) for i in range(fields)] + [DenseFeat("I0", 1)]
    return x, y, cols


def test_wrap_deepctr_trains_and_collapses():
    pytest.importorskip("deepctr_torch", reason="deepctr-torch not installed (pip install mlet-compress[deepctr])")
    # optional dependency (the deepctr extra): imported only after the skip check above
    from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names
    from deepctr_torch.models import DeepFM

    x, y, cols = _data(SparseFeat, DenseFeat)
    torch.manual_seed(0)
    model = DeepFM(cols, cols, task="binary", device="cpu", dnn_hidden_units=(16, 16))
    old_ids = {id(p) for p in model.embedding_dict.parameters()}
    wrap_deepctr(model, MLETConfig(inner_dim=16, init_std=0.5))  # before compile(): the optimizer sees the factors
    assert set(model.mlet_wrapped) == {f"embedding_dict.C{i}" for i in range(3)}  # 1-dim linear tables untouched
    reg_params = {id(w[1] if isinstance(w, tuple) else w) for ws, _, _ in model.regularization_weight for w in ws}
    assert not (reg_params & old_ids)  # no stale (replaced) parameters left in the L2 list
    new_ids = {id(p) for name, p in model.named_parameters() if name.endswith((".table", ".proj"))}
    assert new_ids and new_ids <= reg_params
    model.compile("adagrad", "binary_crossentropy", metrics=["auc"])
    before = [p.detach().clone() for p in model.parameters()]
    inputs = {name: x[name] for name in get_feature_names(cols)}
    model.fit(inputs, y, batch_size=128, epochs=1, verbose=0)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()) if p.requires_grad)
    probs = model.predict(inputs, batch_size=256)
    collapse(model)
    assert all(isinstance(model.embedding_dict[f"C{i}"], torch.nn.Embedding) for i in range(3))
    np.testing.assert_allclose(model.predict(inputs, batch_size=256), probs, atol=1e-5)
