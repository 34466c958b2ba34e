#!/usr/bin/env bash
# One GPU session's checks and timings, in order of importance; each step writes its results as it goes.
#   bash benchmarks/gpu_session.sh            # on the GPU machine, from the repo root
#   QUICK=1 DEVICE=cpu bash benchmarks/gpu_session.sh   # the same steps at toy sizes on a CPU (a dry run)
# diffusers (benchmark baseline) comes from a wheel dir if the machine has no registry: WHEELS=path/to/wheels.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DEVICE=${DEVICE:-cuda}
Q=${QUICK:+--quick}
if [ -n "${WHEELS:-}" ]; then pip install --no-index --find-links "$WHEELS" diffusers >/dev/null 2>&1 || true; fi
python -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
timeout 240 python benchmarks/gpu_check.py --device "$DEVICE" $Q; echo "gpu_check exit $?"
timeout 300 python benchmarks/speed.py --device "$DEVICE" --section gpu $Q; echo "speed exit $?"
