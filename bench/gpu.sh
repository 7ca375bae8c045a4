#!/usr/bin/env bash
# The MNIST benchmarks on a CUDA GPU beside the CPU baseline, one table (issue #17 item 6).
#
#   XLMNIST_DATA=/path/to/mnist bash bench/gpu.sh [SHEET ...]   (default: linear mlp; also simple_net linear10)
#
# Installs nothing: it runs in the environment it finds (install.sh's, with a CUDA build of torch) and
# fails at once, saying why, when torch sees no CUDA device. For each sheet it runs, each in its own
# process, xlmnist (the `xlmnist train` code path) and the hand-written PyTorch loop, on cuda and on cpu,
# and prints loop seconds, command seconds (read + compile + data + train + write-back), validation
# accuracy and the GPU's speed-up over the CPU. XLMNIST_GPU_EPOCHS=N shortens the runs (default: the
# workbook's own epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "bench/gpu.sh: no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)' 2>&1)); nothing run" >&2
    exit 3
fi
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
"$PY" - "$@" <<'PYEOF'
import json, os, subprocess, sys, tempfile
from pathlib import Path

sys.path.insert(0, "bench")
from bench_mnist import CASES  # noqa: E402

from xlmnist.data import mnist_available  # noqa: E402
from xlmnist.lessons import build_all  # noqa: E402

sheets = sys.argv[1:] or ["linear", "mlp"]
if not mnist_available():
    sys.exit("bench/gpu.sh: full MNIST not found (set XLMNIST_DATA to the folder of the idx .gz files)")
tmp = Path(tempfile.mkdtemp(prefix="gpu_bench."))
build_all(tmp, only=sorted({CASES[s][0] for s in sheets}))
epochs = os.environ.get("XLMNIST_GPU_EPOCHS")
rows = []
for sheet in sheets:
    book = tmp / CASES[sheet][0]
    got = {}
    for device in ("cuda", "cpu"):
        for kind in ("xlmnist", "torch"):
            cmd = [sys.executable, "bench/bench_mnist.py", "--device", device, "--one", kind, str(book), sheet]
            cmd += ["--epochs", epochs] if epochs else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"{sheet} {kind} {device} failed:\n{proc.stderr[-3000:]}")
            got[kind, device] = r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {sheet} {kind} {device}: loop {r['loop']:.2f}s command {r['command']:.2f}s", flush=True)
    rows.append((sheet, got))
print()
print(f"{'sheet':<11} {'who':<8} {'cuda loop s':>11} {'cpu loop s':>10} {'speed-up':>8} {'cuda cmd s':>10} "
      f"{'cpu cmd s':>9} {'cuda acc':>8} {'cpu acc':>8}")
for sheet, got in rows:
    for kind in ("xlmnist", "torch"):
        g, c = got[kind, "cuda"], got[kind, "cpu"]
        print(f"{sheet:<11} {kind:<8} {g['loop']:>11.2f} {c['loop']:>10.2f} {c['loop'] / g['loop']:>7.2f}x "
              f"{g['command']:>10.2f} {c['command']:>9.2f} {g['valid_accuracy']:>8.2%} {c['valid_accuracy']:>8.2%}")
    x, t = got["xlmnist", "cuda"], got["torch", "cuda"]
    print(f"{sheet:<11} cuda xlmnist/hand-written: loop {x['loop'] / t['loop']:.2f}, command {x['command'] / t['command']:.2f}")
PYEOF
