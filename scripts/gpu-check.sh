#!/usr/bin/env bash
# GPU checks and benchmarks in one pass, for a short lease on a CUDA machine without network.
#
#   bash scripts/gpu-check.sh [CARRY_DIR] [RESULTS_DIR]
#
# CARRY_DIR (default .gpu/carry) holds what the machine cannot fetch: wheels (*.whl: torchdeq,
# ase) and *cache.tar.gz, tars of dataset caches made here, e.g. for polarity
#   andersonn data build polarity --limit 20000 --cache-dir .gpu/cache
#   tar -C .gpu/cache -czf .gpu/carry/polcache.tar.gz datasets
# (crystal-gap and mof-pore images compress to 3 and 23 MB: tar their current builds as well).
# The machine's own python3 must have torch with CUDA, numpy, scipy, matplotlib, safetensors
# and tqdm; the package runs from this checkout (PYTHONPATH), RDKit/pymatgen are not needed.
# Each step has its own time limit, so one slow step does not cost the rest; after every step
# RESULTS_DIR/gpu-results.tgz is rewritten with everything so far (a lease may end mid-run).
# STEPS="test_cuda bench_solvers ..." picks steps (see the case list below; default: the four
# README steps). DEVICE=cpu QUICK=1 try the script's mechanics on a machine without a GPU.
set -u
DEV=${DEVICE:-cuda}
Q=${QUICK:+--quick}
CARRY=${1:-.gpu/carry}
RES=${2:-${OUT:-results/gpu}}
WORK=$(mktemp -d)
mkdir -p "$RES"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$WORK/site" ANDERSONN_CACHE="$WORK/cache"

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" \
    "$CARRY"/*.whl || echo "wheel install failed"
mkdir -p "$WORK/cache"
for cache in "$CARRY"/*cache.tar.gz; do tar -C "$WORK/cache" -xzf "$cache"; done

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$WORK/out/$name.log" 2>&1
    local rc=$?
    echo "=== $name: rc $rc in $((SECONDS - t0)) s"
    tail -n 30 "$WORK/out/$name.log"
    tar -C "$WORK/out" -czf "$RES/gpu-results.tgz" .
}
mkdir -p "$WORK/out"
{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0))"; nproc; } > "$WORK/out/machine.txt" 2>&1
cat "$WORK/out/machine.txt"

steps=${STEPS:-test_cuda bench_solvers bench_memory bench_speedup}
for s in $steps; do
    case $s in
    test_cuda) step test_cuda 120 python3 -m pytest -q -s -m cuda -p no:cacheprovider \
        tests/test_cuda.py tests/test_solver_residuals.py ;;
    bench_solvers) step bench_solvers 150 python3 -m andersonn bench solvers --device "$DEV" $Q \
        --no-progress --out "$WORK/out/solvers" ;;
    bench_solvers_tf32) step bench_solvers_tf32 150 python3 -m andersonn bench solvers \
        --device "$DEV" $Q --tf32 --no-progress --out "$WORK/out/solvers-tf32" ;;
    bench_solvers_b1024) step bench_solvers_b1024 200 python3 -m andersonn bench solvers \
        --device "$DEV" $Q --batch 1024 --no-progress --out "$WORK/out/solvers-b1024" ;;
    # our solvers with cuda_graph=True (blocks of iterations replayed as CUDA graphs)
    bench_solvers_graph) step bench_solvers_graph 200 python3 -m andersonn bench solvers \
        --device "$DEV" $Q --cuda-graph --no-progress --out "$WORK/out/solvers-graph" ;;
    bench_solvers_graph_b1024) step bench_solvers_graph_b1024 240 python3 -m andersonn bench \
        solvers --device "$DEV" $Q --cuda-graph --batch 1024 --no-progress \
        --out "$WORK/out/solvers-graph-b1024" ;;
    bench_speedup_graph) step bench_speedup_graph 180 python3 -m andersonn bench speedup \
        polarity --device "$DEV" $Q --epochs 2 --train-limit ${QUICK:+64}${QUICK:-1536} \
        --threads 4 --cuda-graph --no-progress --out "$WORK/out/speedup-polarity-graph" ;;
    bench_speedup_b512_graph) step bench_speedup_b512_graph 200 python3 -m andersonn bench \
        speedup polarity --device "$DEV" $Q --epochs 3 --batch-size 512 --inference-batch 2000 \
        --inference-limit 2000 --threads 4 --cuda-graph --no-progress \
        --out "$WORK/out/speedup-polarity-b512-graph" ;;
    bench_memory) step bench_memory 90 python3 -m andersonn bench memory --device "$DEV" $Q \
        --no-progress --out "$WORK/out/memory" ;;
    # the CPU benchmark's settings (README), then sizes that fill a GPU better
    bench_speedup) step bench_speedup 180 python3 -m andersonn bench speedup polarity \
        --device "$DEV" $Q --epochs 2 --train-limit ${QUICK:+64}${QUICK:-1536} --threads 4 \
        --no-progress --out "$WORK/out/speedup-polarity" ;;
    bench_speedup_cg | bench_speedup_mof)
        task=crystal-gap; [ "$s" = bench_speedup_mof ] && task=mof-pore
        step "$s" 120 python3 -m andersonn bench speedup $task --device "$DEV" $Q --epochs 2 \
            --train-limit ${QUICK:+64}${QUICK:-1536} --threads 4 --no-progress \
            --out "$WORK/out/speedup-$task" ;;
    # crystal-gap (small build to carry) with CUDA-graph solves, at batch 64 and 256 (full train)
    bench_speedup_cg_graph) step bench_speedup_cg_graph 120 python3 -m andersonn bench speedup \
        crystal-gap --device "$DEV" $Q --epochs 2 --train-limit ${QUICK:+64}${QUICK:-1536} \
        --threads 4 --cuda-graph --no-progress --out "$WORK/out/speedup-crystal-gap-graph" ;;
    bench_speedup_cg_b256_graph) step bench_speedup_cg_b256_graph 150 python3 -m andersonn \
        bench speedup crystal-gap --device "$DEV" $Q --epochs 3 --batch-size 256 \
        --inference-batch 627 --inference-limit 627 --threads 4 --cuda-graph --no-progress \
        --out "$WORK/out/speedup-crystal-gap-b256-graph" ;;
    bench_speedup_cg_warm) step bench_speedup_cg_warm 120 python3 -m andersonn bench speedup \
        crystal-gap --device "$DEV" $Q --epochs 3 --train-limit ${QUICK:+64}${QUICK:-1536} \
        --threads 4 --warm-start --no-progress --out "$WORK/out/speedup-crystal-gap-warm" ;;
    bench_speedup_b512) step bench_speedup_b512 200 python3 -m andersonn bench speedup polarity \
        --device "$DEV" $Q --epochs 3 --batch-size 512 --inference-batch 2000 \
        --inference-limit 2000 --threads 4 --no-progress --out "$WORK/out/speedup-polarity-b512" ;;
    # the product on CUDA: bf16 training with checkpoints, metrics and plots; DDP over NCCL
    train_cuda) step train_cuda 150 python3 -m andersonn train polarity --limit 20000 \
        --epochs ${QUICK:+1}${QUICK:-2} --bf16 --device "$DEV" --threads 4 --no-progress \
        --out "$WORK/out/train-cuda" ;;
    train_ddp) step train_ddp 150 python3 -m torch.distributed.run --nproc_per_node 1 \
        -m andersonn train polarity --limit 20000 --epochs 1 --device "$DEV" --threads 4 \
        --no-progress --out "$WORK/out/train-ddp" ;;
    # torchrun (NCCL on the GPU) on crystal-gap, whose build travels small; then evaluate and
    # predict on the GPU from the run it wrote
    train_ddp_cg) step train_ddp_cg 180 bash -c "python3 -m torch.distributed.run \
        --nproc_per_node 1 -m andersonn train crystal-gap --epochs ${QUICK:+1}${QUICK:-3} \
        --device $DEV --threads 4 --no-progress --out $WORK/out/train-ddp-cg \
        && python3 -m andersonn evaluate $WORK/out/train-ddp-cg --device $DEV --no-progress \
        --out $WORK/out/train-ddp-cg/evaluate.json \
        && python3 -m andersonn predict $WORK/out/train-ddp-cg --device $DEV --no-progress \
        tests/fixtures/structures/NaCl.cif tests/fixtures/structures/POSCAR_Si" ;;
    *) echo "unknown step $s" ;;
    esac
done
echo "=== all steps done $(date -u +%H:%M:%S)"
