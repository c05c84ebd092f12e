#!/usr/bin/env bash
# Run a command as if this x86-64 CPU had AVX2 + FMA only (no AVX-512, no VNNI, no AMX), like an
# AMD EPYC Rome / Zen 2 VM, by executing it under QEMU user-mode emulation (TCG, which emulates
# AVX2 since QEMU 7.2). onnxruntime (MLAS) then picks its AVX2 kernels, e.g. the U8S8 GEMM whose
# int16 pair sums saturate (see benchmarks/isa_saturation.py).
#
#   benchmarks/avx2_emulated.sh .venv/bin/python benchmarks/isa_saturation.py --check
#   benchmarks/avx2_emulated.sh .venv/bin/python -m pytest tests/test_x.py
#   benchmarks/avx2_emulated.sh .venv/bin/pytest tests/test_x.py        # a #! script: its interpreter is emulated
#
# Needs qemu-x86_64 (Debian/Ubuntu: apt-get install qemu-user; QEMU >= 7.2 for AVX2).
# Environment: AVX2_EMU_CPU overrides the QEMU CPU model (default: EPYC-Rome with the features TCG
# cannot emulate switched off, so QEMU prints no warnings; e.g. AVX2_EMU_CPU=Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid).
#
# What is emulated: the first program of the command (an ELF binary, or the interpreter of a #! script),
# every process it forks (fork stays inside QEMU), and the Python processes it starts by
# sys.executable (subprocess, multiprocessing spawn/forkserver) or by the bare names python/python3/
# python3.X on PATH: those go through a small shim that re-enters QEMU. QEMU user mode cannot follow
# execve by itself (binfmt_misc is not available in a container), so any other program started by
# an absolute path (e.g. /work/main/.venv/bin/python, .venv/bin/pytest, a compiler) runs NATIVELY.
# Emulation is slow (TCG; measured on a Sapphire Rapids host): Python and imports ~8-10x, an INT8
# (QLinearConv) onnxruntime model ~50x, but FP32 kernels ~10000x (QEMU emulates each FMA lane in
# software; AVX2_EMU_CPU=<default>,-fma is 10x faster but changes FP32 rounding). So run torch
# (training, export) natively and only the onnxruntime checks emulated.
set -euo pipefail

prog=$(basename "$0")
QEMU=${AVX2_EMU_QEMU:-qemu-x86_64}
DEFAULT_CPU="EPYC-Rome,-rdseed,-sha-ni,-rdpid,-fxsr-opt,-misalignsse,-3dnowprefetch,-osvw,-topoext,-perfctr-core,-clzero,-xsaveerptr,-wbnoinvd,-ibpb,-amd-stibp,-nrip-save,-xsavec,-xsaves"
CPU=${AVX2_EMU_CPU:-$DEFAULT_CPU}

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
if ! qemu_path=$(command -v "$QEMU"); then
    echo "$prog: error: $QEMU not found. Install QEMU user-mode emulation first: apt-get install qemu-user" >&2
    echo "$prog: (Debian 12 / Ubuntu 23.04+ ship QEMU >= 7.2, the first version whose TCG emulates AVX2)" >&2
    exit 127
fi
qemu_ver=$("$qemu_path" --version | sed -n 's/.*version \([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p' | head -n 1)
if [[ -n $qemu_ver ]] && (( ${qemu_ver% *} * 100 + ${qemu_ver#* } < 702 )); then
    echo "$prog: warning: $("$qemu_path" --version | head -n 1): QEMU < 7.2 does not emulate AVX2, onnxruntime will see SSE4.1 only" >&2
fi
case $(uname -m) in x86_64|amd64) ;; *) echo "$prog: warning: host is $(uname -m), not x86-64" >&2 ;; esac

is_elf() { [[ -f $1 && $(head -c 4 "$1" | od -An -c | tr -d ' ') == '177ELF' ]]; }

# Resolve the program to run under QEMU: an ELF binary as is, a #! script through its interpreter.
target=$(command -v -- "$1" || true)
if [[ -z $target || ! -f $target ]]; then
    echo "$prog: error: '$1' is not an executable file (shell builtins and functions cannot be emulated; use e.g. bash -c '...')" >&2
    exit 127
fi
shift
interp=()
if ! is_elf "$target"; then
    if [[ $(head -c 2 "$target") != '#!' ]]; then
        echo "$prog: error: $target is neither an ELF binary nor a #! script" >&2
        exit 126
    fi
    read -r -a interp < <(head -n 1 "$target" | cut -c 3-)
    if [[ ${#interp[@]} -eq 0 ]]; then
        echo "$prog: error: empty #! line in $target" >&2
        exit 126
    fi
    if [[ $(basename "${interp[0]}") == env ]]; then  # #!/usr/bin/env [-S] name
        interp=("${interp[@]:1}")
        [[ ${interp[0]:-} == -S ]] && interp=("${interp[@]:1}")
        interp[0]=$(command -v -- "${interp[0]}") || { echo "$prog: error: interpreter of $target not found" >&2; exit 127; }
    fi
    is_elf "${interp[0]}" || { echo "$prog: error: interpreter ${interp[0]} of $target is not an ELF binary" >&2; exit 126; }
    set -- "$target" "$@"
    target=${interp[0]}
    interp=("${interp[@]:1}")
fi
target=$(cd "$(dirname "$target")" && pwd)/$(basename "$target")   # absolute, symlinks kept (venv detection)

# The Python that the shim (re-)enters for child Python processes: the one being run, else ./.venv's.
repo=$(cd "$(dirname "$0")/.." && pwd)
if [[ $(basename "$target") == python* ]]; then
    emu_python=$target
elif [[ -x $repo/.venv/bin/python ]]; then
    emu_python=$repo/.venv/bin/python
else
    emu_python=$(command -v python3 || true)
fi

# Shim: <dir>/bin/{python,python3,python3.X} re-enter QEMU; <dir>/site/sitecustomize.py points
# sys.executable at the shim inside every Python process that sees PYTHONPATH.
shim=${TMPDIR:-/tmp}/avx2_emulated-$(id -u)
mkdir -p -m 700 "$shim/bin" "$shim/site"
[[ -O $shim ]] || { echo "$prog: error: $shim is not owned by $(id -un)" >&2; exit 1; }
write() {  # atomic, so concurrent runs never see half a file
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat > "$tmp"
    chmod "$2" "$tmp"
    mv -f "$tmp" "$1"
}
write "$shim/bin/python" 755 <<'EOF'
#!/bin/sh
# avx2_emulated.sh shim: run the emulated Python under QEMU with the AVX2-only CPU model.
exec "$AVX2_EMU_QEMU_PATH" -cpu "$AVX2_EMU_CPU" "$AVX2_EMU_PYTHON" "$@"
EOF
pyver=$("$emu_python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
for name in python3 $pyver; do
    ln -sfn python "$shim/bin/$name"
done
write "$shim/site/sitecustomize.py" 644 <<'EOF'
# avx2_emulated.sh: child Python processes started via sys.executable re-enter QEMU through the shim.
import os as _os
import sys as _sys

_s = _os.environ.get("AVX2_EMU_SHIM")
if _s:
    _sys.executable = _s
    _sys._base_executable = _s
# chain to a sitecustomize further down sys.path, if there is one
import importlib.machinery as _m
import importlib.util as _u

_here = _os.path.dirname(_os.path.abspath(__file__))
_spec = _m.PathFinder.find_spec("sitecustomize", [p for p in _sys.path if _os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _mod = _u.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
EOF

export AVX2_EMU_QEMU_PATH=$qemu_path AVX2_EMU_CPU=$CPU AVX2_EMU_PYTHON=$emu_python AVX2_EMU_SHIM=$shim/bin/python
export QEMU_CPU=$CPU  # honoured by any direct qemu-x86_64 call
export PATH=$shim/bin:$PATH
export PYTHONPATH=$shim/site${PYTHONPATH:+:$PYTHONPATH}
exec "$qemu_path" -cpu "$CPU" "$target" "${interp[@]}" "$@"
