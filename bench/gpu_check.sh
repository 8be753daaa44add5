#!/usr/bin/env bash
# The GPU checks of issue 6 as one prepared script for a lent CUDA machine (15 minutes of device time in all, so it
# must end well inside one call). In order of what matters most:
#   1. throughput alone on the GPU (timed): all_positions fp32 vs CUDA AMP vs RecBole prefix, seconds per epoch;
#   2. then, at the same time (neither is timed for a claim): the gpu-marked tests, and time-to-quality seeds of
#      RecBole prefix vs all_positions, one process per seed, cut at a fixed deadline: a seed whose two runs did not
#      both finish is left out of the summary.
# Usage on the device machine, from the repo root:  OUT=<folder> bash bench/gpu_check.sh
# The machine's python has numpy 2; RecBole 1.2.1 needs numpy<2, so its pinned stack travels as .whl/site312.tar.xz
# (made here by bench/gpu_site.sh). Call the device tool's run with carry [".whl"].
# Env: PY (python, default python3); USE_SITE=0 (not the carried stack: a dry run of the plumbing elsewhere);
#      DEADLINE_S (seconds from start at which ttq seeds are cut, default 480); TTQ_SEEDS (default 2020..2027);
#      THROUGHPUT_EPOCHS (default 3; 0 skips throughput); TTQ_VARIANTS (ours, default ours-all-positions and
#      ours-all-positions-relative; RecBole
#      prefix always runs); PRIOR_TTQ (a ttq resume file from an earlier run on this kind of machine: its finished
#      runs are reused, e.g. RecBole prefix's, so that only new variants train).
set -u
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
OUT=${OUT:?set OUT to a folder for the results}
DEADLINE_S=${DEADLINE_S:-480}
TTQ_SEEDS=${TTQ_SEEDS:-"2020 2021 2022 2023 2024 2025 2026 2027"}
TTQ_VARIANTS=${TTQ_VARIANTS:-"ours-all-positions ours-all-positions-relative"}
# Each seed's process trains its variants in turn: the prefix-mode ones (minutes each) go last, so a deadline cuts
# them and not the cheap ones queued behind them.
TTQ_VARIANTS="$(for v in $TTQ_VARIANTS; do case $v in *prefix*) ;; *) printf '%s ' "$v" ;; esac; done)$(
    for v in $TTQ_VARIANTS; do case $v in *prefix*) printf '%s ' "$v" ;; esac; done)"
PRIOR_TTQ=${PRIOR_TTQ:-}
ROOT=$(pwd)
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

SITE=""
if [ -f .whl/site312.tar.xz ] && [ "${USE_SITE:-1}" = 1 ]; then
    tar -C /tmp -xJf .whl/site312.tar.xz || exit 1
    SITE=/tmp/site312:
fi
export PYTHONPATH=$SITE$ROOT
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
    "$PY" -c "import sys, torch, numpy, scipy, pandas, recbole; print('python', sys.version.split()[0], 'torch',
torch.__version__, 'cuda', torch.cuda.is_available(), 'numpy', numpy.__version__, 'scipy', scipy.__version__,
'pandas', pandas.__version__, 'recbole', recbole.__version__)"
    nproc
} 2>&1 | tee "$OUT/env.txt"

# Every bench run works in its own copy of the code (ttq's resume file is per tree): the bench/out of the tree this
# script runs from is never written.
copy_of_tree() {
    rm -rf "$1" && mkdir -p "$1" &&
        tar -C "$ROOT" --exclude=bench/out -cf - mmrecbole properties bench setup.py | tar -C "$1" -xf -
}
bench_in() {  # bench_in <copy> <timeout seconds> <bench_sequential.py arguments...>
    local copy=$1 limit=$2
    shift 2
    (cd "$copy" && PYTHONPATH=$SITE$copy timeout "$limit" "$PY" bench/bench_sequential.py "$@")
}

if [ "${THROUGHPUT_EPOCHS:-3}" != 0 ]; then
    echo "== throughput at $(elapsed) s"
    copy_of_tree /tmp/gpu-throughput
    bench_in /tmp/gpu-throughput 150 throughput --epochs "${THROUGHPUT_EPOCHS:-3}" 2>&1 | tee "$OUT/throughput.txt"
    cp /tmp/gpu-throughput/bench/out/sequential-throughput.json "$OUT/sequential-throughput-gpu.json" 2>/dev/null
fi

echo "== ttq seeds and gpu tests at $(elapsed) s"
left=$(( DEADLINE_S - $(elapsed) ))
for seed in $TTQ_SEEDS; do
    copy_of_tree /tmp/ttq-$seed
    if [ -n "$PRIOR_TTQ" ]; then
        mkdir -p /tmp/ttq-$seed/bench/out && cp "$PRIOR_TTQ" /tmp/ttq-$seed/bench/out/sequential-ttq.partial.json
    fi
    bench_in /tmp/ttq-$seed "$left" ttq --seeds "$seed" --variants $TTQ_VARIANTS > /tmp/ttq-$seed/ttq.log 2>&1 &
done
timeout $(( left > 60 ? left - 30 : 30 )) "$PY" -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/gpu-tests.txt" 2>&1
tail -15 "$OUT/gpu-tests.txt"
wait

echo "== ttq summary at $(elapsed) s"
# The seeds whose runs (RecBole prefix and every variant) all finished go into one more copy's resume file: ttq over just those seeds then reuses
# every run (trains nothing) and prints the summary with the paired tests.
copy_of_tree /tmp/ttq-summary && mkdir -p /tmp/ttq-summary/bench/out
"$PY" - "$TTQ_SEEDS" /tmp/ttq-summary/bench/out/sequential-ttq.partial.json "$TTQ_VARIANTS" <<'MERGE' | tee "$OUT/ttq-seeds.txt"
import json, os, sys
sys.path.insert(0, "/tmp/ttq-summary/bench")
from bench_sequential import BACKBONE, VARIANTS, run_key
runs, complete = {}, []
for seed in sys.argv[1].split():
    path = f"/tmp/ttq-{seed}/bench/out/sequential-ttq.partial.json"
    if os.path.exists(path):
        found = json.load(open(path))["runs"]
        runs.update(found)
        wanted = {run_key(VARIANTS[name][0], "ml-100k", {**BACKBONE, **VARIANTS[name][1], "seed": int(seed),
                                                          "epochs": 100, "stopping_step": 10})
                  for name in ["recbole-prefix"] + sys.argv[3].split()}
        if wanted <= set(found):  # RecBole prefix and every variant of ours finished
            complete.append(seed)
json.dump({"runs": runs}, open(sys.argv[2], "w"), default=str)
print(" ".join(complete))
MERGE
complete=$(tail -1 "$OUT/ttq-seeds.txt")
cat /tmp/ttq-*/ttq.log > "$OUT/ttq-logs.txt" 2>/dev/null
if [ -n "$complete" ]; then
    bench_in /tmp/ttq-summary 60 ttq --seeds $complete --variants $TTQ_VARIANTS 2>&1 | tee "$OUT/ttq.txt"
    cp /tmp/ttq-summary/bench/out/sequential-ttq.partial.json "$OUT/sequential-ttq-gpu.partial.json"
fi
echo "== done at $(elapsed) s"
