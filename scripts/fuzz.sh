#!/usr/bin/env bash
# Coverage-guided fuzzing of reactive-core's decoders with cargo fuzz (libFuzzer, nightly).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run each target SECONDS (default 10) from the
#                                           corpus in rust/fuzz/corpus/<target>/, without
#                                           changing it (new finds go to a scratch copy)
#   scripts/fuzz.sh --merge [SECONDS] [TARGET...]
#                                           the long run by hand: then merge what the run
#                                           found into the kept corpus (minimized)
#
# Targets (rust/fuzz/fuzz_targets/): index_key_decode, index_key_order, stored_value_decode,
# log_record_decode, document_id_parse. A crash, a leak, a timeout or an allocation past the
# caps of rust/fuzz/src/lib.rs fails the run; the input is saved under
# rust/fuzz/artifacts/<target>/ and `cargo +nightly fuzz run --fuzz-dir rust/fuzz <target>
# <file>` replays it. Prints the executions of every target and their total.
#
# Needs the nightly toolchain (rustup) and cargo-fuzz; installs cargo-fuzz from crates.io
# when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

merge=0
if [[ "${1:-}" == "--merge" ]]; then
    merge=1
    shift
fi
seconds=10
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
    seconds=$1
    shift
fi
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(index_key_decode index_key_order stored_value_decode log_record_decode document_id_parse)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

fuzz=(cargo +nightly fuzz)
dir=rust/fuzz
echo "== building the fuzz targets (cargo +nightly fuzz build, release, address sanitizer)"
"${fuzz[@]}" build --fuzz-dir "$dir" -O

scratch=$(mktemp -d "${TMPDIR:-/tmp}/reactive-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
total=0
for target in "${targets[@]}"; do
    kept="$dir/corpus/$target"
    mkdir -p "$kept" "$scratch/$target"
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1)
    if [[ -f "$dir/dict/$target.dict" ]]; then
        args+=(-dict="$dir/dict/$target.dict")
    fi
    log="$scratch/$target.log"
    # New inputs go to the scratch directory (the first one); the kept corpus is only read.
    if ! "${fuzz[@]}" run --fuzz-dir "$dir" -O "$target" "$scratch/$target" "$kept" \
        -- "${args[@]}" >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz target $target FAILED; the input is under $dir/artifacts/$target/" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    runs=${runs:-0}
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    echo "$target: $runs executions in ${seconds} s (${cov:-cov: ?}), $(ls "$kept" | wc -l) kept inputs"
    total=$((total + runs))
    if [[ $merge -eq 1 ]]; then
        mkdir -p "$scratch/merged-$target"
        "${fuzz[@]}" run --fuzz-dir "$dir" -O "$target" "$scratch/merged-$target" "$kept" \
            "$scratch/$target" -- -merge=1 >/dev/null 2>&1
        # Named regression inputs (bug-*, seed-*) stay under their names; the rest is
        # replaced by the merged set (libFuzzer names it by content hash).
        find "$kept" -maxdepth 1 -type f -regextype posix-extended \
            -regex '.*/[0-9a-f]{40}' -delete
        cp -r "$scratch/merged-$target"/. "$kept"/
        echo "$target: corpus merged, $(ls "$kept" | wc -l) inputs"
    fi
done
echo "fuzzing: $total executions over ${#targets[@]} targets, no failure"
