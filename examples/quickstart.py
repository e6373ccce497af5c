"""Quickstart: wrap a small model with MLET, train a few SGD steps, collapse, save, and check that the
command-line collapse of the uncollapsed checkpoint gives the same outputs.

    python examples/quickstart.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

import mlet_compress as mc


class TinyCTR(nn.Module):
    """Two categorical fields → embeddings → a dot product and a linear head."""

    def __init__(self, n_users: int = 1000, n_items: int = 500, d: int = 8):
        super().__init__()
        self.user = nn.Embedding(n_users, d, sparse=True)
        self.item = nn.Embedding(n_items, d, sparse=True)
        self.head = nn.Linear(2 * d + 1, 1)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        u, i = self.user(user), self.item(item)
        return self.head(torch.cat([u, i, (u * i).sum(1, keepdim=True)], 1)).squeeze(1)


def main() -> None:
    torch.manual_seed(0)
    model = mc.wrap(TinyCTR(), mc.MLETConfig(inner_dim=32, init_std=0.25))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    users, items = torch.randint(0, 1000, (4096,)), torch.randint(0, 500, (4096,))
    labels = ((users % 7) < (items % 5)).float()
    for step in range(20):
        b = slice(step * 200, step * 200 + 200)
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(users[b], items[b]), labels[b])
        loss.backward()
        opt.step()
    print(f"trained 20 SGD steps, last loss {loss.item():.4f}; wrapped: {sorted(model.mlet_wrapped)}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        factors = mc.save_checkpoint(model, Path(tmp) / "factors.safetensors")
        with torch.no_grad():
            probe = model(users[:64], items[:64])
        mc.collapse(model)  # back to plain nn.Embedding, verified on probe rows
        collapsed = mc.save_checkpoint(model, Path(tmp) / "model.safetensors")

        cli_out = Path(tmp) / "cli.safetensors"
        cli = subprocess.run([sys.executable, "-m", "mlet_compress.cli.app", "collapse", str(factors), "-o", str(cli_out)],
                             capture_output=True, text=True)
        if cli.returncode != 0:
            sys.exit(f"mlet-compress collapse failed:\n{cli.stderr}")
        print(f"mlet-compress collapse {factors.name} -o {cli_out.name}: {cli.stderr.strip().splitlines()[-2]}", flush=True)
        fresh = TinyCTR()
        fresh.load_state_dict(mc.load_checkpoint(cli_out).state_dict(), strict=True)
        with torch.no_grad():
            same_as_mlet = torch.allclose(fresh(users[:64], items[:64]), probe, rtol=1e-5, atol=1e-6)
        a, b = mc.load_checkpoint(collapsed).state_dict(), mc.load_checkpoint(cli_out).state_dict()
        same_as_module = a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-6, atol=1e-6) for k in a)
        print(f"CLI collapse == module collapse: {same_as_module}; outputs == MLET outputs: {same_as_mlet}", flush=True)
        if not (same_as_mlet and same_as_module):
            sys.exit("quickstart check failed")


if __name__ == "__main__":
    main()
