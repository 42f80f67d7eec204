#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR SECONDS
# Runs every libFuzzer target BUILD_DIR/tests/fuzz/fuzz_<name> for SECONDS, starting from a
# temporary copy of its seed corpus tests/fuzz/corpus/<name>/ (seeds are never modified)
# with tests/fuzz/<name>.dict when present. Prints one summary line per target and exits
# non-zero if any target crashed, leaked, timed out or ran out of memory; the artifacts and
# log of a failing target are kept and their paths printed.
set -euo pipefail

if [[ $# -ne 2 || ! $2 =~ ^[0-9]+$ ]]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
if [[ ! -d $1 ]]; then
    echo "$0: $1: no such build directory" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/tern-fuzz.XXXXXX")

shopt -s nullglob
targets=("$build"/tests/fuzz/fuzz_*)
if [[ ${#targets[@]} -eq 0 ]]; then
    echo "no fuzz_* executables in $build/tests/fuzz (configure with -DTERN_FUZZ=ON)" >&2
    rm -rf "$work"
    exit 2
fi

failed=0
for exe in "${targets[@]}"; do
    [[ -x $exe && -f $exe ]] || continue
    name=${exe##*/fuzz_}
    corpus=$work/$name/corpus
    artifacts=$work/$name/artifacts
    log=$work/$name/log
    mkdir -p "$corpus" "$artifacts"
    if [[ -d $here/corpus/$name ]]; then
        cp -R "$here/corpus/$name/." "$corpus/"
    fi
    args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="$artifacts/" -print_final_stats=1)
    if [[ -f $here/$name.dict ]]; then
        args+=(-dict="$here/$name.dict")
    fi

    rc=0
    "$exe" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?

    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    units=$(find "$corpus" -type f | wc -l)
    found=$(find "$artifacts" -type f | wc -l)
    if [[ $rc -eq 0 && $found -eq 0 ]]; then
        printf 'fuzz_%s: ok %ss execs=%s exec/s=%s cov=%s corpus=%s\n' \
            "$name" "$seconds" "${execs:-?}" "${speed:-?}" "${cov:-?}" "$units"
        rm -rf "${work:?}/$name"
    else
        printf 'fuzz_%s: FAILED rc=%s execs=%s artifacts=%s (%s files) log=%s\n' \
            "$name" "$rc" "${execs:-?}" "$artifacts" "$found" "$log"
        failed=1
    fi
done

if [[ $failed -eq 0 ]]; then
    rm -rf "$work"
fi
exit "$failed"
