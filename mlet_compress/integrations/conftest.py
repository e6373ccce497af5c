"""pytest (doctest collection): skip the modules of integrations whose library is not installed."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torchrec") else ["torchrec*.py"]
