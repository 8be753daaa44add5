#!/usr/bin/env bash
# Builds .whl/site312.tar.xz, the pinned RecBole stack that bench/gpu_check.sh unpacks on a lent CUDA machine: that
# machine has its own CUDA torch under Python 3.12 but numpy 2 (RecBole 1.2.1 needs numpy<2) and no package index.
# The cp312 wheels are unzipped into one folder (what an install does for these pure/extension wheels), tests and
# caches stripped, and xz-compressed to fit the device tool's 64 MiB transfer limit (~41 MB). Run here, from the
# repo root; `.whl/` must be git-ignored (`echo /.whl/ >> .git/info/exclude`) and named in the run's `carry`.
set -eu
PINS="numpy==1.26.4 pandas==2.3.3 scipy==1.11.4 recbole==1.2.1 colorlog==4.7.2 texttable==1.7.2
thop==0.1.1.post2209072238 implicit==0.7.3 lightgbm==4.7.0 pytz tzdata"
work=$(mktemp -d)
for pin in $PINS; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$work/wheels" "$pin"
done
mkdir -p "$work/site312" .whl
for wheel in "$work"/wheels/*.whl; do unzip -q -o "$wheel" -d "$work/site312"; done
find "$work/site312" -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} +
tar -C "$work" -cJf .whl/site312.tar.xz.tmp site312 && mv .whl/site312.tar.xz.tmp .whl/site312.tar.xz
rm -rf "$work"
ls -l .whl/site312.tar.xz
