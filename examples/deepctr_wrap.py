"""MLET with a DeepCTR-Torch model: wrap before compile(), train with DeepCTR's fit(), collapse, save.

Needs the optional extra: ``pip install -e ".[deepctr]"`` (deepctr-torch, and requests, which it imports).

    python examples/deepctr_wrap.py

The data is a small synthetic CTR table built here (three categorical fields and one numeric field), so
the script runs as written; swap in your own columns and arrays.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

import mlet_compress as mc
from mlet_compress.train import wrap_deepctr

try:
    from deepctr_torch.inputs import DenseFeat, SparseFeat, get_feature_names
    from deepctr_torch.models import DeepFM
except ImportError:
    sys.exit('deepctr-torch is not installed: pip install -e ".[deepctr]"')


def make_data(n: int = 4000, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Three categorical fields (ids 0..vocab-1) and one numeric field; the label depends on both."""
    rng = np.random.default_rng(seed)
    x = {"user": rng.integers(0, 500, n), "item": rng.integers(0, 200, n), "site": rng.integers(0, 20, n),
         "price": rng.normal(size=n).astype(np.float32)}
    logit = 0.8 * np.sin(x["user"]) + 0.6 * np.cos(x["item"]) + 0.5 * x["price"]
    return x, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)


def main() -> None:
    x, y = make_data()
    # feature columns: one SparseFeat per categorical field (vocabulary size, embedding dim d), one DenseFeat
    columns = [SparseFeat("user", vocabulary_size=500, embedding_dim=8),
               SparseFeat("item", vocabulary_size=200, embedding_dim=8),
               SparseFeat("site", vocabulary_size=20, embedding_dim=8),
               DenseFeat("price", 1)]
    inputs = {name: x[name] for name in get_feature_names(columns)}

    torch.manual_seed(0)
    model = DeepFM(columns, columns, task="binary", device="cpu")
    wrap_deepctr(model, mc.MLETConfig(inner_dim=64, init_std=0.5))  # before compile(): the optimizer sees the factors
    print("MLET tables:", ", ".join(f"{n} ({i['num_embeddings']}x{i['inner_dim']} @ {i['inner_dim']}->{i['embedding_dim']})"
                                    for n, i in model.mlet_wrapped.items()), flush=True)
    model.compile("adagrad", "binary_crossentropy", metrics=["auc"])
    model.fit(inputs, y, batch_size=256, epochs=3, validation_split=0.1, verbose=2)

    probs = model.predict(inputs, batch_size=1024)
    mc.collapse(model)  # plain nn.Embedding(n, 8) tables again; outputs unchanged
    assert np.allclose(model.predict(inputs, batch_size=1024), probs, atol=1e-5)
    with tempfile.TemporaryDirectory() as tmp:
        path = mc.save_checkpoint(model, Path(tmp) / "deepfm.safetensors")
        fresh = DeepFM(columns, columns, task="binary", device="cpu")
        fresh.load_state_dict(mc.load_checkpoint(path).state_dict(), strict=True)  # the original architecture
        same = np.allclose(fresh.predict(inputs, batch_size=1024), probs, atol=1e-5)
        print(f"collapsed and saved {path.name}: loads into a fresh DeepFM (strict=True), same predictions: {same}")
    if not same:
        sys.exit("deepctr_wrap check failed")


if __name__ == "__main__":
    main()
