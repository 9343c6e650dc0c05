#!/usr/bin/env bash
# Fuzzes the push decoders, the GB/T 28181 id parser, the camera registry's message
# readers and the dashboard endpoints' definitions and parameters for a bounded time.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 60)
#
# Needs cargo-fuzz (installed here if missing) and a toolchain that accepts -Zsanitizer:
# nightly when rustup has it, otherwise stable with RUSTC_BOOTSTRAP=1. Findings are written
# to fuzz/artifacts/<target>/ and make the script fail; the corpus grows in fuzz/corpus/.
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")/../fuzz"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "Installing cargo-fuzz ..."
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    export RUSTC_BOOTSTRAP=1
fi

targets=(push_decoders camera_id camera_messages endpoint_params)
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    echo "Fuzzing $target for $seconds s ..."
    cargo "${toolchain[@]}" fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -print_final_stats=1
done
echo "No crash in $(( seconds * ${#targets[@]} )) s of fuzzing."
