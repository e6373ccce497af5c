#!/usr/bin/env bash
# Install mlet-compress with its TorchRec engine into the active Python environment (CPU machines).
#
#   scripts/install-torchrec.sh                  # editable install of this checkout with extras "test,torchrec"
#   MLET_EXTRAS=torchrec scripts/install-torchrec.sh
#
# Two steps because torchrec 1.9.2 declares a dependency on `fbgemm-gpu` (the CUDA distribution) while the
# CPU kernels ship as `fbgemm-gpu-cpu` (same `fbgemm_gpu` module, different name): the extra installs
# fbgemm-gpu-cpu and torchrec's other dependencies, then torchrec goes in with --no-deps.
# On a CUDA machine use the torch / fbgemm-gpu / torchrec versions of the PyTorch install matrix instead.
set -euo pipefail
cd "$(dirname "$0")/.."
constraints="${MLET_CONSTRAINTS:-constraints-cpu.txt}"
extras="${MLET_EXTRAS:-test,torchrec}"
python -m pip install -c "$constraints" -e ".[${extras}]"
python -m pip install -c "$constraints" --no-deps "torchrec==1.9.2"
python -c "import torch, fbgemm_gpu, torchrec; print(f'torch {torch.__version__}, torchrec {torchrec.__version__}: ok')"
