#!/usr/bin/env bash
# The runtime on arm64 (issue #15): a real aarch64 Debian userland under qemu-user-static.
#
#   sudo benchmarks/arm64_check.sh                      # make models on x86, then check them
#   sudo benchmarks/arm64_check.sh --root-only          # only build (or reuse) the arm64 root
#   sudo benchmarks/arm64_check.sh FP32_DIR INT8_DIR    # check these exported model directories
#
# 1. builds, once, an arm64 Debian root with debootstrap (cached in $EDGE_LUNG_ARM64_ROOT,
#    default /var/cache/edge-lung/arm64-root; delete it to rebuild);
# 2. installs this working tree's base package there in a fresh venv, exactly as the README's
#    device section says (`pip install .`), and fails if torch (or the training stack) came with it;
# 3. runs the README's device commands there: `edge-lung devices`, `classify`, `stream --replay`
#    and `bench`, with the FP32 and the INT8 (arm64 preset) model on real ICBHI recordings
#    ($EDGE_LUNG_ICBHI_DIR);
# 4. runs the same classify/stream on this x86 host and compares the events
#    (benchmarks/arm64_compare.py): the table goes to benchmarks/results/.
#
# onnxruntime's arm64 kernels run emulated: decisions and logits are real, timings are not.
# Needs root (debootstrap, chroot, binfmt_misc) and Debian's and PyPI's package servers.
# Takes ~20 min the first time on 2 cores (debootstrap + pip under qemu), a few minutes after.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${EDGE_LUNG_ARM64_ROOT:-/var/cache/edge-lung/arm64-root}"
WORK="${EDGE_LUNG_ARM64_WORK:-/tmp/edge-lung-arm64}"
SUITE="${EDGE_LUNG_ARM64_SUITE:-bookworm}"
HOST_VENV="${EDGE_LUNG_HOST_VENV:-$REPO/.venv}"
DATA="${EDGE_LUNG_ICBHI_DIR:-}"
NFILES="${EDGE_LUNG_ARM64_FILES:-6}"
RESULTS="$REPO/benchmarks/results"
TIMINGS="$WORK/timings.txt"

log() { printf '[arm64_check %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }
timed() {  # timed LABEL CMD...: runs CMD, appends "LABEL SECONDS" to the timings file
  local label="$1" start; shift; start=$(date +%s)
  "$@"
  echo "$label $(( $(date +%s) - start ))" >>"$TIMINGS"
}

host_tools() {
  [[ $EUID -eq 0 ]] || die "needs root (debootstrap, chroot, binfmt_misc): run it with sudo"
  local need=()
  command -v debootstrap >/dev/null || need+=(debootstrap)
  [[ -x /usr/bin/qemu-aarch64-static ]] || need+=(qemu-user-static binfmt-support)
  if ((${#need[@]})); then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  fi
  # Containers often start without binfmt_misc mounted; qemu-user-static registers itself there.
  [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
    die "cannot mount binfmt_misc: arm64 binaries cannot run on this host"
  [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || update-binfmts --enable qemu-aarch64 ||
    die "cannot register qemu-aarch64 with binfmt_misc"
}

build_root() {
  if [[ ! -e "$ROOT/.edge-lung-root-done" ]]; then
    log "debootstrap --arch=arm64 $SUITE into $ROOT (once; slow under qemu)"
    rm -rf "$ROOT" && mkdir -p "$(dirname "$ROOT")"
    timed debootstrap debootstrap --arch=arm64 --variant=minbase \
      --include=python3,python3-venv,ca-certificates,libportaudio2 "$SUITE" "$ROOT" >"$WORK/debootstrap.log"
    touch "$ROOT/.edge-lung-root-done"
  fi
  if ! chroot "$ROOT" /bin/true 2>/dev/null; then
    # binfmt registered without the F flag looks for the interpreter inside the root.
    log "chroot says Exec format error: copying qemu-aarch64-static into the root"
    cp /usr/bin/qemu-aarch64-static "$ROOT/usr/bin/"
    chroot "$ROOT" /bin/true || die "cannot run arm64 binaries in $ROOT"
  fi
  [[ "$(chroot "$ROOT" uname -m)" == aarch64 ]] || die "the root in $ROOT does not run as aarch64"
  # pip inside the root needs name resolution and the host's CA bundle.
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  mkdir -p "$ROOT/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/"
}

mount_root() {
  # /proc only. onnxruntime's cpuinfo looks in /sys for the CPU list; with the host's /sys bound
  # in, it crashes under qemu (SIGSEGV, measured); without it, it warns "cpuinfo_initialize
  # failed" and MLAS picks its arm64 kernels from the auxiliary vector (HWCAP) that qemu reports.
  mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
  trap 'umount "$ROOT/dev" "$ROOT/proc" 2>/dev/null || true' EXIT
}

arm() { chroot "$ROOT" /usr/bin/env -i HOME=/root PATH=/opt/edge-lung-venv/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"; }

install_package() {
  # The working tree (committed or not, ignored files left out) is what gets installed.
  rm -rf "$ROOT/opt/edge-lung" && mkdir -p "$ROOT/opt/edge-lung/src"
  git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    (cd "$REPO" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$ROOT/opt/edge-lung/src"
  if [[ -n "${EDGE_LUNG_ARM64_KEEP_VENV:-}" && -x "$ROOT/opt/edge-lung-venv/bin/edge-lung" ]]; then
    log "EDGE_LUNG_ARM64_KEEP_VENV: reinstalling only the package (--no-deps) into the existing venv"
    timed pip_package arm pip install -q --disable-pip-version-check --no-deps --force-reinstall \
      /opt/edge-lung/src >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; die "pip install failed"; }
  else
    log "pip install . (the README's device install) in a fresh venv in the arm64 root"
    rm -rf "$ROOT/opt/edge-lung-venv"
    timed venv arm python3 -m venv /opt/edge-lung-venv
    timed pip_install arm pip install -q --disable-pip-version-check \
      /opt/edge-lung/src >"$WORK/pip.log" 2>&1 || { tail -20 "$WORK/pip.log"; die "pip install failed"; }
  fi
  arm pip list --format=freeze --disable-pip-version-check >"$WORK/arm64-pip-list.txt"
  if grep -Eiq '^(torch|transformers|peft|accelerate|onnx)==' "$WORK/arm64-pip-list.txt"; then
    die "the base install pulled the training stack: $(grep -Ei '^(torch|transformers|peft|accelerate|onnx)==' "$WORK/arm64-pip-list.txt" | tr '\n' ' ')"
  fi
  log "base install: $(wc -l <"$WORK/arm64-pip-list.txt") packages, no torch"
}

make_models() {  # FP32 and INT8 (arm64 preset) model directories, made on this x86 host unless given
  if [[ $# -eq 2 ]]; then MODELS=([fp32]="$1" [int8-arm64]="$2"); return; fi
  local el="$HOST_VENV/bin/edge-lung" run
  [[ -x "$el" ]] || die "no $el: run \`make setup\` first (or set EDGE_LUNG_HOST_VENV), or pass FP32_DIR INT8_DIR"
  if [[ ! -e "$WORK/demo/.done" ]]; then
    log "training a quick real model on x86: edge-lung demo --quick"
    timed demo "$el" demo --quick --out "$WORK/demo" >"$WORK/demo.log" 2>&1 || { tail -20 "$WORK/demo.log"; die "demo failed"; }
    touch "$WORK/demo/.done"
  fi
  run="$WORK/demo/run"  # the demo also leaves backbone-run/, the stage before the adapters
  [[ -d "$run/model" ]] || die "no training run (config.json + model/) under $WORK/demo"
  mkdir -p "$WORK/models"
  MODELS=([fp32]="$WORK/models/fp32" [int8-arm64]="$WORK/models/int8-arm64")
  [[ -e "$WORK/models/fp32/manifest.json" && -e "$WORK/models/int8-arm64/manifest.json" ]] && return
  "$el" export "$run" --out "$WORK/models/fp32" --overwrite >"$WORK/export-fp32.log" 2>&1 || die "FP32 export failed"
  "$el" export "$run" --out "$WORK/models/int8-arm64" --int8 --preset arm64 --overwrite \
    >"$WORK/export-int8.log" 2>&1 || die "INT8 export failed"
  MODELS=([fp32]="$WORK/models/fp32" [int8-arm64]="$WORK/models/int8-arm64")
}

pick_files() {  # NFILES real recordings spread over the sorted subset (every device, several patients)
  [[ -n "$DATA" && -d "$DATA" ]] || die "set EDGE_LUNG_ICBHI_DIR to the ICBHI subset"
  mapfile -t all < <(find "$DATA" -name '*.wav' | sort)
  local step=$(( ${#all[@]} / NFILES )); ((step > 0)) || step=1
  FILES=()
  for ((i = 0; i < ${#all[@]} && ${#FILES[@]} < NFILES; i += step)); do FILES+=("${all[i]}"); done
}

# run_side OUT HOST_OUT EDGE_LUNG PYTHON COMPARE_PY MODEL_ROOT DATA_ROOT [WRAPPER...]: the same commands on
# either machine; OUT is the output folder as the command sees it, HOST_OUT the same folder seen from here.
run_side() {
  local out="$1" hout="$2" el="$3" py="$4" cmp="$5" mroot="$6" droot="$7"; shift 7
  local files=() f name
  for f in "${FILES[@]}"; do files+=("$droot/$(basename "$f")"); done
  for name in "${!MODELS[@]}"; do
    "$@" "$el" classify "$mroot/$name" "${files[@]}" --jsonl "$out/$name.classify.jsonl" >"$hout/$name.classify.txt"
    "$@" "$el" stream "$mroot/$name" --replay "${files[0]}" --quiet --jsonl "$out/$name.stream.jsonl" 2>"$hout/$name.stream.txt"
    "$@" "$py" "$cmp" logits "$mroot/$name" "$out/$name.logits.json" "${files[@]}"
  done
}

readme_device_section() {  # the README's device commands on the clean aarch64 userland
  local out=/opt/edge-lung/out rc=0
  arm edge-lung devices >"$WORK/arm64/devices.txt" 2>&1 || rc=$?
  # No sound card in a chroot: the command must still run and say so, not fail on PortAudio.
  if ((rc)) && ! grep -q "no audio input device found" "$WORK/arm64/devices.txt"; then
    cat "$WORK/arm64/devices.txt"; die "edge-lung devices failed on arm64"
  fi
  timed bench_arm64 arm edge-lung bench /opt/edge-lung/models/int8-arm64 --threads 1 --windows 5 --warmup 1 \
    --json "$out/bench.json" >"$WORK/arm64/bench.txt" 2>&1 || { cat "$WORK/arm64/bench.txt"; die "edge-lung bench failed on arm64"; }
}

main() {
  mkdir -p "$WORK" && : >"$TIMINGS"
  host_tools
  build_root
  [[ "${1:-}" == --root-only ]] && { log "arm64 root ready in $ROOT"; exit 0; }
  declare -gA MODELS
  make_models "$@"
  pick_files
  mount_root
  timed install_total install_package
  local stage="$ROOT/opt/edge-lung" name
  mkdir -p "$stage/models" "$stage/data" "$stage/out" "$WORK/x86" "$WORK/arm64"
  for name in "${!MODELS[@]}"; do cp -r "${MODELS[$name]}/." "$stage/models/$name/"; done
  cp "${FILES[@]}" "$stage/data/"
  log "x86: classify, stream --replay and logits on ${#FILES[@]} recordings"
  timed x86_runs run_side "$WORK/x86" "$WORK/x86" "$HOST_VENV/bin/edge-lung" "$HOST_VENV/bin/python" \
    "$REPO/benchmarks/arm64_compare.py" "$stage/models" "$stage/data" env PYTHONPATH="$REPO"
  log "arm64 (emulated): the same"
  timed arm64_runs run_side /opt/edge-lung/out "$stage/out" edge-lung python \
    /opt/edge-lung/src/benchmarks/arm64_compare.py /opt/edge-lung/models /opt/edge-lung/data arm
  readme_device_section
  cp "$stage/out/"* "$WORK/arm64/"
  report
}

report() {
  mkdir -p "$RESULTS/arm64"
  local stem="$RESULTS/arm64/$(date +%Y-%m-%d)-arm64-check"
  "$HOST_VENV/bin/python" "$REPO/benchmarks/arm64_compare.py" compare "$WORK/x86" "$WORK/arm64" "$stem"
  {
    echo; echo "Machine: $(uname -m) host, $(nproc) cores, qemu $(/usr/bin/qemu-aarch64-static --version | head -1 | awk '{print $3}')"
    echo "arm64 userland: Debian $SUITE ($(arm uname -m)), $(arm python --version)," \
      "$(grep -Ei '^(onnxruntime|numpy|soundfile|soxr)==' "$WORK/arm64-pip-list.txt" | tr '\n' ' ')"
    echo "Recordings: ${#FILES[@]} from EDGE_LUNG_ICBHI_DIR ($(for f in "${FILES[@]}"; do basename "$f" .wav; done | tr '\n' ' '))"
    echo "Timings (s): $(tr '\n' ';' <"$TIMINGS")"
    echo "torch in the arm64 base install: none ($(wc -l <"$WORK/arm64-pip-list.txt") packages)"
  } >>"$stem.md"
  cp "$WORK/arm64-pip-list.txt" "$stem-pip-list.txt"
  log "wrote $stem.md and $stem.json"
}

main "$@"
