# Shared by the one-call device scripts (.ci/gpu-check, .ci/gpu-train-demo); source it from the repo root.
# Sets OUT (absolute, created), PY, SHIM (remove it at the end), the environment that runs the package
# from this checkout (nothing is installed on the device image; the ONNX runtime's import name points at
# export/), an empty $OUT/steps.jsonl, and step().
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python}
SHIM=$(mktemp -d)
ln -s "$PWD/export" "$SHIM/varedit_onnx"
export PYTHONPATH="$PWD:$SHIM${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1
: > "$OUT/steps.jsonl"

# step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log, record rc and seconds
step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '{"step": "%s", "rc": %d, "seconds": %d, "limit": %d}\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$limit" \
    >> "$OUT/steps.jsonl"
  echo "$name: rc $rc" >&2
}
