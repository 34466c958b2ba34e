#!/usr/bin/env bash
# One GPU session's checks and timings, in two stages that each fit one device call; every step writes its
# results as it goes, and each stage ends by packing benchmarks/results into $OUT (when set).
#   bash benchmarks/gpu_session.sh speed   # samplers and training steps fast vs eager, speed.py beside diffusers, DDP smoke
#   bash benchmarks/gpu_session.sh eval    # Fashion-MNIST evaluation, 10 and 50 per class, 10 fresh seeds (300..;
#     the default seed count since 2026-12-02, one classifier each, the network chosen per regime)
#     preregister it first, on the CPU, and commit the plan; then PLAN=that file runs exactly it:
#     python -m diffaug evaluate fashion-mnist --per-class 10,50 --seeds 10 --seed-start 300 \
#       --out benchmarks/results/gains_fashion-mnist_gpu \
#       --preregister benchmarks/preregistration/fashion-mnist_k10-50_seeds300-309.json
#   QUICK=1 DEVICE=cpu bash benchmarks/gpu_session.sh speed|eval   # the same steps at toy sizes on a CPU
# Without a registry: WHEELS=dir installs wheels into /tmp/site first (diffusers and importlib_metadata for speed.py,
# kornia and kornia_rs for the diffaug CLI of the DDP smoke and the evaluation); FMNIST=dir points at
# the four Fashion-MNIST IDX .gz files; N_JOBS sets how many evaluation units share the card (default 5).
set -uo pipefail
cd "$(dirname "$0")/.."
stage=${1:?usage: gpu_session.sh speed|eval}
DEVICE=${DEVICE:-cuda}
Q=${QUICK:+--quick}
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
[ -n "${FMNIST:-}" ] && export DIFFAUG_FASHION_MNIST="$FMNIST"
pack() { [ -n "${OUT:-}" ] && tar czf "$OUT/results-$stage.tgz" benchmarks/results; }
trap pack EXIT
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"

case "$stage" in
  speed)
    # ~9.5 minutes in all, one device call (a 15-minute device budget, started once); each step writes as it goes;
    # 2026-11-28: gpu_check needed more than 110 s beside the compiling warm-ups.
    # torch.compile's cold compiles of the timed cases run first, in parallel processes beside gpu_check (which
    # times nothing): they fill the on-disk caches (FX graph, AOTAutograd, Triton) that the timed run then reads,
    # and record the cold warm-up seconds in results/speed_<device>_cold.jsonl.
    if [ -n "${QUICK:-}" ]; then specs=("2:diffaug + compile" "2:diffusers + compile")
    else specs=("0:diffaug + compile" "0:diffusers + compile" "1:diffaug + compile" "1:diffusers + compile"); fi
    for i in "${!specs[@]}"; do
      timeout 200 python benchmarks/speed.py --device "$DEVICE" --section gpu $Q --warm "${specs[$i]}" \
        > "/tmp/speed_warm_$i.log" 2>&1 &
    done
    timeout 180 python benchmarks/gpu_check.py --device "$DEVICE" $Q; echo "gpu_check exit $?"
    wait; for i in "${!specs[@]}"; do tail -n 1 "/tmp/speed_warm_$i.log"; done
    # the two cases with bars only (2026-11-28: the run of all four cases ended, at 320 s, before `base` b512)
    timeout 330 python benchmarks/speed.py --device "$DEVICE" --section gpu --cases 0,1 $Q; echo "speed exit $?"
    # DDP smoke on the one card: NCCL (gloo on a CPU) init, the all-reduced step and rank 0's writes, under torchrun
    timeout 40 python -m torch.distributed.run --standalone --nproc-per-node 1 -m diffaug fit digits --steps 60 \
      --device "$DEVICE" --distributed --quiet --overwrite --out /tmp/ddp_smoke.safetensors; echo "ddp smoke exit $?"
    ;;
  eval)
    if [ -n "${QUICK:-}" ]; then
      sets="--set gen_steps=20 --set synthetic_per_class=20 --set reference_steps=20 --set classifier_steps=20 --set cas_steps=20"
      timeout 500 python benchmarks/gains.py --dataset fashion-mnist --per-class 10 --seeds 2 --device "$DEVICE" \
        --n-jobs "${N_JOBS:-2}" --tag quick $sets; echo "gains exit $?"
    else
      plan=${PLAN:+--preregistered $PLAN --looks benchmarks/results/test_split_looks.json}
      timeout 560 python -m diffaug evaluate fashion-mnist --per-class 10,50 --seeds "${SEEDS:-10}" \
        --seed-start "${SEED_START:-300}" \
        --device "$DEVICE" --n-jobs "${N_JOBS:-5}" --out benchmarks/results/gains_fashion-mnist_gpu $plan --quiet
      echo "evaluate exit $?"
    fi
    ;;
  *) echo "unknown stage $stage (speed|eval)"; exit 2 ;;
esac
