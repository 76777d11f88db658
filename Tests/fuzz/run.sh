#!/usr/bin/env bash
# make fuzz: builds the libFuzzer harnesses (-sanitize=fuzzer,address) and runs each parser for a
# fixed number of executions on seed corpora made from Fixtures/. A crash, leak or timeout stops
# with the reproducer saved in Tests/fuzz/crashes/ (turn it into a fixture and a test).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${FUZZ_RUNS:-100000}
WTOOL=${WTOOL:-$ROOT/.build/debug/wtool}
(cd Tests/fuzz && swift build -c release -Xswiftc -sanitize=fuzzer,address --scratch-path "$ROOT/.build-fuzz")
FUZZ=$ROOT/.build-fuzz/release/wtool-fuzz
WORK=$(mktemp -d /tmp/wtool-fuzz-corpus.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$ROOT/Tests/fuzz/crashes"
for t in header index gguf recipe spec permutations adapter statistics pickle torchzip; do mkdir -p "$WORK/$t"; done

# Seeds: real files of each kind.
for f in Fixtures/edge/*.safetensors Fixtures/malformed/*.safetensors Fixtures/quant/weights.safetensors; do
  head -c 65536 "$f" > "$WORK/header/$(basename "$f")"
done
cp Fixtures/tiny-llama/ft-sharded/model.safetensors.index.json "$WORK/index/real.json"
echo '{"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}' > "$WORK/index/small.json"
"$WTOOL" quantize Fixtures/tiny-llama/base -o "$WORK/q8.gguf" --scheme q8_0 --llama-cpp --tokenizer none --quiet
"$WTOOL" quantize Fixtures/quant/weights.safetensors -o "$WORK/q4k.gguf" --scheme q4_k --quiet
head -c 65536 "$WORK/q8.gguf" > "$WORK/gguf/q8"; head -c 65536 "$WORK/q4k.gguf" > "$WORK/gguf/q4k"
cp Fixtures/mergekit/*.yml "$WORK/recipe/"
"$WTOOL" permute-match --print-spec Fixtures/tiny-llama/base > "$WORK/spec/llama.json"
"$WTOOL" permute-match --print-spec Fixtures/permute/b.safetensors > "$WORK/spec/mlp.json"
"$WTOOL" permute-match --reference Fixtures/permute/a.safetensors Fixtures/permute/b.safetensors \
  -o "$WORK/b.safetensors" --perm-out "$WORK/permutations/p.json" --quiet
"$WTOOL" lowrank-svd extract --base Fixtures/tiny-llama/base Fixtures/tiny-llama/ft-a -o "$WORK/ad" --rank 2 --quiet
cp "$WORK/ad/adapter_config.json" "$WORK/adapter/"
cp Fixtures/dtypes.safetensors "$WORK/statistics/"
# torch.save archives (written without torch by the interop helper) and their pickles alone.
.venv/bin/python - "$WORK" <<'PY'
import sys, zipfile
sys.path.insert(0, "Tests/interop")
import numpy as np
from torch_zip import Tensor, plain, save
w = sys.argv[1]
base = np.arange(24, dtype=np.float32).reshape(4, 6)
save(f"{w}/torchzip/sd.bin", {"a": plain("0", base), "view": Tensor("0", "FloatStorage", base.tobytes(), 24, 8, (2, 3), (6, 1)),
                              "nested": {"b": plain("1", np.ones(3, np.int64))}, "epoch": 3})
save(f"{w}/torchzip/v3.bin", {"f8": Tensor("2", "UntypedStorage", bytes(16), 16, 0, (4, 4), (4, 1), v3_dtype="float8_e4m3fn")})
for n in ("sd", "v3"):
    z = zipfile.ZipFile(f"{w}/torchzip/{n}.bin")
    open(f"{w}/pickle/{n}.pkl", "wb").write(z.read(f"{n}/data.pkl"))
PY
rm -rf "$WORK/ad" "$WORK/b.safetensors"* "$WORK"/*.gguf "$WORK"/*.report.json

for t in header index gguf recipe spec permutations adapter statistics pickle torchzip; do
  echo "== $t: $RUNS runs"
  (cd "$ROOT/Tests/fuzz/crashes" && WTOOL_FUZZ_TARGET=$t "$FUZZ" -runs="$RUNS" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$ROOT/Tests/fuzz/crashes/$t-" -print_final_stats=1 "$WORK/$t" 2>&1 | grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|==|SUMMARY|Done)" || true)
  if ls "$ROOT/Tests/fuzz/crashes/$t-"* >/dev/null 2>&1; then echo "fuzz: $t found a failure: $(ls "$ROOT/Tests/fuzz/crashes/$t-"*)"; exit 1; fi
done
echo "fuzz: no crash, leak or timeout"
