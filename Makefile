# Two commands on a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
# torch is pinned first: on CPU machines pip then finds the local CPU wheel instead of
# pulling several GB of CUDA packages for an unpinned `torch`.
TORCH  ?= torch==2.13.0

.PHONY: setup demo test lint bench bench3d bench-optics bench-optics16 bench-beads bench-fastloc bench-fastloc3d bench-calib bench-multicolor clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/deepsmlm demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

$(VENV)/.peers: $(STAMP)
	$(PIP) install -q -e ".[peers]"
	touch $(VENV)/.peers

# Slow benchmarks (docs/benchmarks.md). DEVICE=cuda trains the Deep-STORM model on a GPU;
# on a CPU give it time (TRAIN_MINUTES).
DEVICE ?= cpu
TRAIN_MINUTES ?= 60
bench: $(STAMP) $(VENV)/.peers
	$(PY) benchmarks/simulation_speed.py --json bench_out/simulation_speed_cpu.json
	$(PY) benchmarks/picasso_baseline.py --json bench_out/picasso_baseline.json
	$(PY) benchmarks/deepstorm2d.py movies --out bench_out/movies2d
	$(PY) benchmarks/deepstorm2d.py train --out bench_out/ds2d --device $(DEVICE) \
		--minutes $(TRAIN_MINUTES) --batch-size 64 --steps-per-epoch 200 --lr-patience 3
	$(PY) benchmarks/deepstorm2d.py evaluate --model bench_out/ds2d/model \
		--movies bench_out/movies2d --device $(DEVICE) --json bench_out/deepstorm2d.json

clean:
	rm -rf $(VENV) demo_out .pytest_cache build src/*.egg-info

# DeepSTORM3D at CPU scale (needs the Tetrapod mask of ../shared/data/deepstorm3d).
bench3d: $(STAMP)
	rm -rf bench_out/ds3d/model
	$(VENV)/bin/deepsmlm train configs/3d-tetrapod.yaml --out bench_out/ds3d/model \
		--max-minutes 50 --device $(DEVICE) --quiet
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d
	$(PY) benchmarks/deepstorm3d.py evaluate --model bench_out/ds3d/model \
		--movies bench_out/movies3d --device $(DEVICE) --json bench_out/deepstorm3d.json
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d_field --context-px 20
	$(PY) benchmarks/deepstorm3d.py evaluate --model bench_out/ds3d/model \
		--movies bench_out/movies3d_field --out bench_out/ds3d_eval_field --device $(DEVICE) \
		--json bench_out/deepstorm3d_field.json

# Learned PSF vs Tetrapod vs astigmatism (issue 6), CPU scale: ≈ 20 min of design and
# 3 × OPTICS_TRAIN_MINUTES of training, then both geometries evaluated.
OPTICS_TRAIN_MINUTES ?= 15
bench-optics: $(STAMP)  # after make bench3d (its model starts the design)
	rm -rf bench_out/optics
	$(PY) benchmarks/deep_optics.py design --out bench_out/optics --minutes 20 \
		--init-model bench_out/ds3d/model
	$(PY) benchmarks/deep_optics.py arms --out bench_out/optics
	$(PY) benchmarks/deep_optics.py train --out bench_out/optics --minutes $(OPTICS_TRAIN_MINUTES)
	$(PY) benchmarks/deep_optics.py movies --out bench_out/optics
	$(PY) benchmarks/deep_optics.py evaluate --out bench_out/optics --docs docs/images
	$(PY) benchmarks/deep_optics.py movies --out bench_out/optics --context-px 20
	$(PY) benchmarks/deep_optics.py evaluate --out bench_out/optics --context-px 20 \
		--docs docs/images

# Deep optics from scratch (issue 16): the three-stage design from a clear aperture, the
# same stages from the Tetrapod, then five arms (from scratch, from the Tetrapod, the
# paper's learned mask, Tetrapod, astigmatism) × 2 seeds, 12 min each, both geometries.
# One lane: ≈ 5 h on 2 cores (the docs' run used two lanes at one thread each).
bench-optics16: $(STAMP)
	rm -rf bench_out/optics16 bench_out/optics16_s0 bench_out/optics16_s1
	$(PY) benchmarks/deep_optics.py scratch --out bench_out/optics16 --minutes 45
	$(PY) benchmarks/deep_optics.py scratch --from-tetrapod --out bench_out/optics16 --minutes 45
	for s in 0 1; do o=bench_out/optics16_s$$s; \
	  $(PY) benchmarks/deep_optics.py arms --out $$o --designs bench_out/optics16 --seed $$s && \
	  $(PY) benchmarks/deep_optics.py train --out $$o --minutes 12 && \
	  $(PY) benchmarks/deep_optics.py movies --out $$o && \
	  $(PY) benchmarks/deep_optics.py movies --out $$o --context-px 20 && \
	  $(PY) benchmarks/deep_optics.py evaluate --out $$o --docs docs/images --tag deep_optics16_s$$s && \
	  $(PY) benchmarks/deep_optics.py evaluate --out $$o --context-px 20 --docs docs/images \
	    --tag deep_optics16_s$$s || exit 1; done
	$(PY) benchmarks/deep_optics.py shapes --out bench_out/optics16_s0 --docs docs/images \
	  --tag deep_optics16

# Mask-file conventions (issue 18): our PSF against a forward-FFT reference for the
# DeepSTORM3D masks, then the DeepNebulae Tetrapod bead scan localized with models trained
# for the mask as is and turned by 180° (the convention before the fix): ≈ 2 × BEADS_MINUTES.
BEADS_MINUTES ?= 30
bench-beads: $(STAMP)
	$(PY) benchmarks/mask_conventions.py --json bench_out/mask_conventions.json
	$(PY) benchmarks/bead_stack.py orient --out bench_out/beads
	rm -rf bench_out/beads/model_fixed bench_out/beads/model_old
	OMP_NUM_THREADS=1 $(PY) benchmarks/bead_stack.py train --out bench_out/beads \
		--minutes $(BEADS_MINUTES)
	$(PY) benchmarks/bead_stack.py localize --out bench_out/beads
	$(PY) benchmarks/bead_stack.py evaluate --out bench_out/beads --docs docs/images

# fastloc on SMLM-Challenge-style 2D frames (a PSF it never saw) against Picasso; speed
# against the published Deep-STORM (docs/benchmarks.md, "fastloc"); ≈ 20 min on 2 cores.
# PSF calibration on the real bead stacks (≈ 25 min), then two DeepSTORM3D models (design
# mask vs calibrated pupil, CALIB_MINUTES each, in parallel) on the Tetrapod stack.
CALIB_MINUTES ?= 25
bench-calib: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) benchmarks/calibrate_beads.py simulated --out bench_out/calib
	OMP_NUM_THREADS=2 $(PY) benchmarks/calibrate_beads.py calibrate --out bench_out/calib
	rm -rf bench_out/calib/model_design bench_out/calib/model_calibrated
	$(PY) benchmarks/calibrate_beads.py train --out bench_out/calib --minutes $(CALIB_MINUTES)
	$(PY) benchmarks/calibrate_beads.py localize --out bench_out/calib
	$(PY) benchmarks/calibrate_beads.py evaluate --out bench_out/calib --docs docs/images
	$(PY) benchmarks/calibrate_beads.py mle --out bench_out/calib
	$(PY) benchmarks/calibrate_beads.py mle-censored --out bench_out/calib
	$(PY) benchmarks/calibrate_beads.py jitter --out bench_out/calib
	OMP_NUM_THREADS=1 $(PY) benchmarks/calibrate_beads.py refine --out bench_out/calib --docs docs/images

# fastloc on SMLM-Challenge-style 2D (issue 13): the config's 40 epochs (≈ 30 min on one
# thread), 100 held-out frames matched and mismatched, lone spots by depth, speed
bench-fastloc: $(STAMP) $(VENV)/.peers
	rm -rf bench_out/fl2d
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train configs/smlm2016-2d.yaml --out bench_out/fl2d --quiet
	$(PY) benchmarks/fastloc.py smlm-movies --out bench_out/fl_smlm100 --frames 100
	$(PY) benchmarks/fastloc.py smlm-evaluate --model bench_out/fl2d --movies bench_out/fl_smlm100 \
		--json bench_out/fastloc_smlm.json
	OMP_NUM_THREADS=1 $(PY) benchmarks/fastloc.py isolated --model bench_out/fl2d \
		--json bench_out/fastloc_isolated.json
	OMP_NUM_THREADS=1 $(PY) benchmarks/fastloc.py speed --model bench_out/fl2d --frames 200 \
		--json bench_out/fastloc_speed.json

# fastloc 3D against DeepSTORM3D (issue 13): each pair trained at the same time, one thread
# each (Tetrapod 50 min, astigmatism 25 min; then fastloc with 4 levels), scored on the same
# movies, matched and with the PSF off (≈ 2 h 30 min on 2 cores; needs ../shared/data)
FL3D_SETS = movies3d movies3d_field movies3d_mis movies3d_field_mis
bench-fastloc3d: $(STAMP)
	rm -rf bench_out/fl3d bench_out/fl3d_l4 bench_out/ds3d_1t bench_out/astig_fl bench_out/astig_ds3d bench_out/eval13
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train benchmarks/configs/tetrapod-fastloc.yaml \
		--out bench_out/fl3d --max-minutes 50 --quiet & \
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train configs/3d-tetrapod.yaml \
		--out bench_out/ds3d_1t --max-minutes 50 --quiet; wait
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train benchmarks/configs/astigmatic-fastloc.yaml \
		--out bench_out/astig_fl --max-minutes 25 --quiet & \
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train benchmarks/configs/astigmatic-deepstorm3d.yaml \
		--out bench_out/astig_ds3d --max-minutes 25 --quiet; wait
	OMP_NUM_THREADS=1 $(VENV)/bin/deepsmlm train benchmarks/configs/tetrapod-fastloc-4levels.yaml \
		--out bench_out/fl3d_l4 --max-minutes 50 --quiet
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d_field --context-px 20
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d_mis --mismatch
	$(PY) benchmarks/deepstorm3d.py movies --out bench_out/movies3d_field_mis --context-px 20 --mismatch
	$(PY) benchmarks/deepstorm3d.py movies --config benchmarks/configs/astigmatic-deepstorm3d.yaml \
		--out bench_out/movies_astig
	$(PY) benchmarks/deepstorm3d.py movies --config benchmarks/configs/astigmatic-deepstorm3d.yaml \
		--out bench_out/movies_astig_mis --mismatch
	for s in $(FL3D_SETS); do for m in fl3d fl3d_l4 ds3d_1t; do \
		$(PY) benchmarks/deepstorm3d.py evaluate --model bench_out/$$m --movies bench_out/$$s \
			--out bench_out/eval13/$${m}_$$s --json bench_out/eval13/$${m}_$$s.json || exit 1; \
	done; $(PY) benchmarks/fastloc.py compare3d --fastloc bench_out/eval13/fl3d_$$s.json \
		--deepstorm3d bench_out/eval13/ds3d_1t_$$s.json; done
	for s in movies_astig movies_astig_mis; do for m in astig_fl astig_ds3d; do \
		$(PY) benchmarks/deepstorm3d.py evaluate --model bench_out/$$m --movies bench_out/$$s \
			--out bench_out/eval13/$${m}_$$s --json bench_out/eval13/$${m}_$$s.json || exit 1; \
	done; $(PY) benchmarks/fastloc.py compare3d --fastloc bench_out/eval13/astig_fl_$$s.json \
		--deepstorm3d bench_out/eval13/astig_ds3d_$$s.json; done
	$(PY) benchmarks/fastloc.py uncertainty bench_out/eval13/fl3d_movies3d*.json \
		bench_out/eval13/astig_fl_movies_astig*.json

# Multicolor (issue 14): masks for colour (end to end from a clear aperture; Fisher
# information on λ; end to end from that) against a clear aperture, K = 2 and 4
# (≈ 5 h on 2 cores: designs, eleven 25-epoch trainings, 528 held-out movies)
bench-multicolor: $(STAMP)
	rm -rf bench_out/mc bench_out/multicolor.json
	for k in 2 4; do \
		$(PY) benchmarks/multicolor.py design --k $$k --minutes 15 || exit 1; \
		$(PY) benchmarks/multicolor.py design --k $$k --objective crlb --minutes 5 || exit 1; \
		$(PY) benchmarks/multicolor.py design --k $$k --start crlb --minutes 14 || exit 1; \
		$(PY) benchmarks/multicolor.py design --k $$k --start crlb --species-weight 10 \
			--minutes 11 || exit 1; \
		for w in 100 300; do $(PY) benchmarks/multicolor.py design --k $$k --start crlb \
			--colour-weight $$w --minutes 14 || exit 1; done; \
		$(PY) benchmarks/multicolor.py design --k $$k --start scratch --colour-weight 100 \
			--minutes 14 || exit 1; \
		$(PY) benchmarks/multicolor.py design --k $$k --start scratch --crlb-zernike 5 21 \
			--colour-weight 100 --minutes 14 || exit 1; \
		for arm in clear crlb learned learned-crlb learned-crlb-w10 learned-crlb-c100 \
			learned-crlb-c300 scratch-c100 scratch-n21-c100; do \
		$(PY) benchmarks/multicolor.py train --k $$k --arm $$arm --epochs 25 || exit 1; done; done
	$(PY) benchmarks/multicolor.py design --k 4 --species-weight 10 --minutes 13
	$(PY) benchmarks/multicolor.py train --k 4 --arm learned-w10 --epochs 25
	$(PY) benchmarks/multicolor.py evaluate
	$(PY) benchmarks/multicolor.py figures
	$(PY) benchmarks/multicolor.py table
