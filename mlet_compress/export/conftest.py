"""pytest (doctest collection): skip the ONNX modules when onnx is not installed (the ``[export]`` extra)."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("onnx") else ["onnx_*.py"]
