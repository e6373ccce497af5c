"""Soak test of DDP training: run the documented ``torchrun`` command N times and count the failures.

Each run executes, in a fresh temporary directory,

    torchrun --nproc-per-node 2 -m mlet_compress.cli.app train --compare --out runs/ddp [EXTRA...]

with ``PYTHONFAULTHANDLER=1`` (a worker killed by SIGSEGV/SIGABRT/SIGBUS dumps its Python stack to
stderr) and records the exit code, the signal a worker died of (parsed from torchrun's report), the
wall time, the faulthandler tracebacks, and what was left in ``runs/ddp``. It prints one line per run
and a final ``N/N passed``; the exit status is 0 only when every run passed.

Options make a faster reproducer (``--max-steps``, ``--rows``, ``--no-compare``), turn on torch's
sparse-tensor invariant checks in every worker (``--check-invariants``, through a ``sitecustomize``
on ``PYTHONPATH``), and set extra environment variables (``--env OMP_NUM_THREADS=2``;
``--debug`` sets ``TORCH_DISTRIBUTED_DEBUG=DETAIL``). Runs are strictly sequential: never start two
torchrun jobs at once on a small machine.

Usage:
    python benchmarks/ddp_soak.py --runs 20                       # the issue's acceptance check
    python benchmarks/ddp_soak.py --runs 50 --max-steps 40 --rows 20000 --check-invariants --debug
    python benchmarks/ddp_soak.py --runs 5 --log-dir /tmp/soak    # keep every run's stdout/stderr
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SITECUSTOMIZE = """\
# Written by benchmarks/ddp_soak.py --check-invariants: validate every sparse COO tensor torch builds.
try:
    import torch
    torch.sparse.check_sparse_tensor_invariants.enable()
except Exception as exc:  # pragma: no cover
    import sys
    print(f"ddp_soak sitecustomize: could not enable sparse invariant checks: {exc}", file=sys.stderr)
"""

_SIGNAL_RE = re.compile(r"Signal (\d+) \((SIG\w+)\) received by PID (\d+)")
_EXITCODE_RE = re.compile(r"exitcode\s*:\s*(-?\d+)")
_RANK_RE = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank")


def build_command(args: argparse.Namespace) -> list[str]:
    """The torchrun command line of one run (relative ``--out``, run inside the temp directory)."""
    cmd = ["torchrun", "--nproc-per-node", str(args.nproc), "-m", "mlet_compress.cli.app", "train"]
    if not args.no_compare:
        cmd.append("--compare")
    cmd += ["--out", "runs/ddp"]
    if args.max_steps:
        cmd += ["--max-steps", str(args.max_steps)]
    if args.rows:
        cmd += ["--rows", str(args.rows)]
    cmd += args.extra
    return cmd


def faulthandler_blocks(stderr: str) -> list[str]:
    """The ``Fatal Python error`` blocks faulthandler wrote (one per crashed process)."""
    blocks, cur = [], None
    for line in stderr.splitlines():
        if line.startswith("Fatal Python error"):
            if cur:
                blocks.append("\n".join(cur))
            cur = [line]
        elif cur is not None:
            if line.strip() == "" and len(cur) > 3 and not line.startswith(" "):
                blocks.append("\n".join(cur))
                cur = None
            else:
                cur.append(line)
    if cur:
        blocks.append("\n".join(cur))
    return blocks


def run_dir_state(root: Path) -> str:
    """A short description of what a run left under ``runs/ddp`` (complete, half-written, missing)."""
    if not root.exists():
        return "no runs/ddp"
    parts = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {p.name for p in sub.iterdir()}
        complete = {"model.safetensors", "metrics.json"} <= files
        parts.append(f"{sub.name}:{'ok' if complete else 'PARTIAL(' + ','.join(sorted(files)) + ')'}")
    if (root / "compare.json").exists():
        parts.append("compare.json")
    return " ".join(parts) or "empty"


def _allow_core_dumps() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def one_run(i: int, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """Run the command once in a fresh temp dir; return what happened."""
    cmd = build_command(args)
    with tempfile.TemporaryDirectory(prefix=f"ddp_soak_{i:03d}_") as tmp:
        # a fresh rendezvous port per run, so a lingering socket of the previous run cannot interfere
        full = [cmd[0], "--master-port", str(29500 + (os.getpid() + i) % 2000)] + cmd[1:]
        t0 = time.perf_counter()
        preexec = _allow_core_dumps if args.keep_cores else None
        try:
            proc = subprocess.run(full, cwd=tmp, env=env, capture_output=True, text=True, timeout=args.timeout,
                                  preexec_fn=preexec)
            rc, out, err, timed_out = proc.returncode, proc.stdout, proc.stderr, False
        except subprocess.TimeoutExpired as exc:
            rc, timed_out = None, True
            out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        seconds = time.perf_counter() - t0
        state = run_dir_state(Path(tmp) / "runs" / "ddp")
        cores = []
        if args.keep_cores and args.log_dir:  # core_pattern "core": written into the worker's cwd (tmp)
            for core in Path(tmp).glob("core*"):
                if rc != 0:
                    dest = Path(args.log_dir) / f"run{i:03d}.{core.name}"
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(core), dest)
                    cores.append(str(dest))
    signals = [f"{m.group(2)}(pid {m.group(3)})" for m in _SIGNAL_RE.finditer(err)]
    exitcodes = sorted({int(c) for c in _EXITCODE_RE.findall(err)})
    for code in exitcodes:  # torchrun reports a signal death as a negative exit code
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            if not any(s.startswith(name) for s in signals):
                signals.append(name)
    ranks = sorted({int(r) for r in _RANK_RE.findall(err)})
    blocks = faulthandler_blocks(err)
    ok = rc == 0 and not timed_out
    if args.log_dir:
        d = Path(args.log_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"run{i:03d}.stdout").write_text(out)
        (d / f"run{i:03d}.stderr").write_text(err)
    return {"i": i, "ok": ok, "rc": rc, "timed_out": timed_out, "seconds": seconds, "signals": signals,
            "ranks": ranks, "tracebacks": blocks, "cores": cores, "state": state, "stderr_tail": "\n".join(err.splitlines()[-40:])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=20, help="number of consecutive runs (default 20)")
    p.add_argument("--nproc", type=int, default=2, help="processes per node (default 2)")
    p.add_argument("--max-steps", type=int, default=None, help="pass --max-steps (faster reproducer)")
    p.add_argument("--rows", type=int, default=None, help="pass --rows (synthetic rows; faster reproducer)")
    p.add_argument("--no-compare", action="store_true", help="train one model instead of --compare")
    p.add_argument("--check-invariants", action="store_true",
                   help="enable torch.sparse.check_sparse_tensor_invariants in every worker")
    p.add_argument("--debug", action="store_true", help="set TORCH_DISTRIBUTED_DEBUG=DETAIL")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="extra environment variable")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as hung (default 900)")
    p.add_argument("--log-dir", default=None, help="keep every run's stdout/stderr here")
    p.add_argument("--keep-cores", action="store_true",
                   help="allow core dumps and move those of failed runs into --log-dir (for gdb)")
    p.add_argument("--stop-on-failure", action="store_true", help="stop at the first failed run")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more arguments for `train`")
    args = p.parse_args(argv)
    if args.extra and args.extra[0] == "--":
        args.extra = args.extra[1:]

    env = dict(os.environ, PYTHONFAULTHANDLER="1", PYTHONUNBUFFERED="1")
    if args.debug:
        env["TORCH_DISTRIBUTED_DEBUG"] = "DETAIL"
    for kv in args.env:
        key, _, value = kv.partition("=")
        env[key] = value
    site_dir = None
    if args.check_invariants:
        site_dir = tempfile.mkdtemp(prefix="ddp_soak_site_")
        Path(site_dir, "sitecustomize.py").write_text(SITECUSTOMIZE)
        env["PYTHONPATH"] = os.pathsep.join(x for x in (site_dir, env.get("PYTHONPATH", "")) if x)

    shown_env = " ".join(f"{k}={env[k]}" for k in ("PYTHONFAULTHANDLER", "TORCH_DISTRIBUTED_DEBUG") if k in env)
    shown_env += "".join(f" {kv}" for kv in args.env) + (" +check_sparse_tensor_invariants" if site_dir else "")
    print(f"command: {shown_env} {shlex.join(build_command(args))}", flush=True)
    results = []
    for i in range(1, args.runs + 1):
        r = one_run(i, args, env)
        results.append(r)
        status = "PASS" if r["ok"] else ("TIMEOUT" if r["timed_out"] else "FAIL")
        extra = ""
        if not r["ok"]:
            extra = f" signals={r['signals'] or '-'} failed_ranks={r['ranks'] or '-'}"
        print(f"run {i:3d}/{args.runs}: {status} rc={r['rc']} {r['seconds']:.1f}s{extra} [{r['state']}]", flush=True)
        if not r["ok"]:
            for block in r["tracebacks"]:
                print("    " + block.replace("\n", "\n    "), flush=True)
            for core in r["cores"]:
                print(f"    core dump: {core}", flush=True)
            if not r["tracebacks"]:
                print("    stderr tail:\n    " + r["stderr_tail"].replace("\n", "\n    "), flush=True)
            if args.stop_on_failure:
                break
    passed = sum(r["ok"] for r in results)
    secs = [r["seconds"] for r in results]
    print(f"{passed}/{len(results)} passed (mean {sum(secs) / max(len(secs), 1):.1f}s per run, "
          f"total {sum(secs) / 60:.1f} min)", flush=True)
    return 0 if passed == len(results) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
