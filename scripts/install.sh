#!/usr/bin/env bash
# Install srq. The one install path shared by the README, CI (.ci/run) and docker/.
#
#   scripts/install.sh                 # .venv with srq[calib,test]: the full build side + tests
#   scripts/install.sh --extras ""     # torch-free deploy install (runtime: check, upscale, lint)
#   scripts/install.sh --venv none     # install into the current interpreter (Docker images)
#
# torch 2.14.1 / torchvision 0.29.1 are pinned by the `calib` extra (CUDA builds that also
# run on CPU; torch 2.13.0 has no matching torchvision, which spandrel imports).
set -euo pipefail

extras="calib,test"
venv=".venv"
editable="-e"
while [ $# -gt 0 ]; do
  case "$1" in
    --extras) extras="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --no-editable) editable=""; shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-python3}"
if [ "$venv" != "none" ]; then
  [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
  python="$(cd "$venv" && pwd)/bin/python"
fi
"$python" -m pip install --quiet --upgrade pip
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
# shellcheck disable=SC2086
"$python" -m pip install --quiet $editable "$spec"
# From outside the checkout: its srq/ folder would shadow a non-editable install.
(cd / && "$python" -m srq --version)
