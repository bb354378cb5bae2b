#!/usr/bin/env bash
# The GPU checks of the performance work, as one script for a lent GPU machine (see docs/performance.md).
#
#   OUT=/tmp/gpu-check bash benchmarks/gpu_check.sh
#
# 1. benchmarks/speed.py on CUDA in fp32, bf16 and fp16, and with torch.compile;
# 2. 500 steps of the mt-cifar10-4000-convnet13 preset on CIFAR-10 files generated here in the official
#    format (random pixels: a throughput check, not an accuracy one), in fp32 and in bf16 + channels-last.
# 3. one run on several GPUs under torchrun (docs/scaling.md, section 1): with two GPUs or more, the
#    fp32 run of step 2 on 2 GPUs (the same global batch), then again with --sync-bn; with one GPU, the
#    fp32 run as one torchrun process. Step times, errors and exit codes go to torchrun-summary.json.
# Results (JSON, Markdown, logs) go to one archive, $OUT/gpu-check.tar.gz (a lent machine returns few
# files). Needs python3 with torch, timm, rich, pyyaml, scikit-learn, scipy and matplotlib; installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
FINAL=${OUT:-/tmp/gpu-check}
OUT=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
# Without an install, ssl_toolkit.algorithms is the top-level algorithms/ folder (pyproject's package-dir).
[ -e ssl_toolkit/algorithms ] || ln -s ../algorithms ssl_toolkit/algorithms
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"

for precision in fp32 bf16 fp16; do
  python3 benchmarks/speed.py --device cuda --precision "$precision" --out "$OUT" 2>&1 | tee "$OUT/speed-$precision.log"
done
python3 benchmarks/speed.py --device cuda --precision bf16 --compile --out "$OUT" 2>&1 | tee "$OUT/speed-compile.log"

DATA=$(mktemp -d)
python3 - "$DATA" <<'EOF'
import pickle, sys
from pathlib import Path
import numpy as np
folder = Path(sys.argv[1]) / "cifar-10-batches-py"
folder.mkdir(parents=True)
rng = np.random.default_rng(0)
def batch(n, name):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(i % 10) for i in range(n)]
    (folder / name).write_bytes(pickle.dumps({"data": data, "labels": labels, "batch_label": name,
                                               "filenames": [f"{i}.png" for i in range(n)]}, protocol=2))
for b in range(1, 6):
    batch(2000, f"data_batch_{b}")
batch(1000, "test_batch")
names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
(folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names, "num_cases_per_batch": 2000}, protocol=2))
EOF
for options in "--precision fp32" "--precision bf16 --channels-last"; do
  name=$(echo "$options" | tr -d ' -')
  start=$(date +%s.%N)
  python3 -m ssl_toolkit run --preset mt-cifar10-4000-convnet13 --data-dir "$DATA" --steps 500 \
    --eval-every 250 --lr-rampup 100 --lr-rampdown 100 --set consistency_rampup=100 $options \
    --out "$DATA/run-$name" 2>&1 | tee "$OUT/mt-cifar10-$name.log" || true
  echo "wall seconds: $(echo "$(date +%s.%N) - $start" | bc)" | tee -a "$OUT/mt-cifar10-$name.log"
  cp "$DATA/run-$name/final.json" "$OUT/mt-cifar10-$name-final.json" 2>/dev/null || true
done

# 3. torchrun: the same 500 steps as the fp32 run above, on 2 GPUs (or as 1 process on a 1-GPU machine).
GPUS=$(python3 -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then TORCHRUN_RUNS="ddp2-fp32:2: ddp2-syncbn:2:--sync-bn"; else TORCHRUN_RUNS="torchrun1-fp32:1:"; fi
for spec in $TORCHRUN_RUNS; do
  IFS=: read -r name procs extra <<< "$spec"
  start=$(date +%s.%N)
  set +e
  timeout 900 python3 -m torch.distributed.run --standalone --nproc_per_node "$procs" -m ssl_toolkit run \
    --preset mt-cifar10-4000-convnet13 --data-dir "$DATA" --steps 500 --eval-every 250 --lr-rampup 100 \
    --lr-rampdown 100 --set consistency_rampup=100 --precision fp32 $extra --out "$DATA/run-$name" \
    > "$OUT/mt-cifar10-$name.log" 2>&1
  echo "exit code: $?" >> "$OUT/mt-cifar10-$name.log"
  set -e
  echo "wall seconds: $(echo "$(date +%s.%N) - $start" | bc)" | tee -a "$OUT/mt-cifar10-$name.log"
  tail -n 5 "$OUT/mt-cifar10-$name.log"
  cp "$DATA/run-$name/final.json" "$OUT/mt-cifar10-$name-final.json" 2>/dev/null || true
done
python3 - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path
out = Path(sys.argv[1])
summary = {}
for log in sorted(out.glob("mt-cifar10-*.log")):
    name = log.stem.removeprefix("mt-cifar10-")
    final_file = out / f"mt-cifar10-{name}-final.json"
    final = json.loads(final_file.read_text()) if final_file.exists() else None
    text = log.read_text()
    code = re.search(r"exit code: (\d+)", text)
    summary[name] = {
        "processes": final.get("world_size", 1) if final else None,
        "train_seconds_per_step": round(final["wall_time_s"] / final["steps"], 4) if final else None,
        "test_error": final["test_error"] if final else None,
        "exit_code": int(code.group(1)) if code else None,
        "error_lines": [line for line in text.splitlines() if re.search(r"^error: |\w+Error\b", line)][-5:],
    }
(out / "torchrun-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
EOF

mkdir -p "$FINAL"
tar -czf "$FINAL/gpu-check.tar.gz" -C "$OUT" .
ls -la "$OUT"
