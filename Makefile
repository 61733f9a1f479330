# `make demo` and `make test` work on a fresh clone: each creates .venv and installs what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
PIP_INSTALL := $(PIP) install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: demo demo-model test test-fast lint bench capi clean gpu-check

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, from the pinned CPU wheel, so nothing later can resolve it to a CUDA build.
$(VENV)/.torch: $(PY) constraints.txt
	$(PIP_INSTALL) torch==2.13.0
	touch $@

$(VENV)/.runtime: $(PY) pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[export,train,bench,test]"
	touch $@

DEMO_WEIGHTS := unigs_deploy/weights/demo/unet/diffusion_pytorch_model.safetensors

$(VENV)/.export: $(VENV)/.torch pyproject.toml constraints.txt
	$(PIP_INSTALL) -e ".[export]"
	touch $@

# The shipped demo model, exported once (again when the weights change).
engines/unigs.json: $(DEMO_WEIGHTS) unigs_deploy/weights/demo/task_defaults.json \
		$(wildcard unigs_deploy/weights/demo/reranker/model.safetensors) | $(VENV)/.export
	$(VENV)/bin/unigs-export --scale demo --out engines

ifneq ($(wildcard $(DEMO_WEIGHTS)),)
demo: $(VENV)/.export engines/unigs.json
	$(VENV)/bin/unigs-demo --engine engines/unigs.onnx --out demo_out
else
demo: $(VENV)/.runtime
	@echo "no demo model in this checkout ($(DEMO_WEIGHTS)); showing the colormap codec"
	$(VENV)/bin/unigs-demo --codec --out demo_out
endif

# Train the demo model from scratch (stage 1: its VAE, 2: the joint UNet + text encoder, 3: one-step
# segment/refer, 4: the same with a loss on the decoded colormap, 5: the VAE decoder alone, 6: a tiny
# VAE distilled from it, 7: the UNet continued on 128x128 images, 8: the same with the text encoder
# learning too, 9 and 10: an entity-separation term on the decoded one-step colormaps, 11 and 12:
# those losses also on segment's second step, fed the model's own first step, 13 and 14: the same
# with stage 10's text encoder, frozen, 20: a pooled caption and a probe asking it for the shape kind,
# 21: the same with the text encoder learning from inpaint examples, most filling one region), shipped;
# then probe K (from the shipped stage 21: one-entity inpainting at 128, the kind learned, to step
# 1,500, run on to 2,500 as probe-kind-long in a copy of its run folder) and probe O (stage 21's mix
# again from probe K at 2,500, pulled at weight 4 toward probe K's inpaint and stage 21's synthesize
# predictions), shipped with its measured task defaults (unigs-bench thresholds/steps/generative) and
# the inpaint reranker (training/reranker.py, trained on the shapes world alone).
# The probes stop and resume where they did (training resumes exactly).
demo-model: $(VENV)/.dev
	$(VENV)/bin/unigs-train configs/demo-vae.toml
	$(VENV)/bin/unigs-train configs/demo.toml
	$(VENV)/bin/unigs-train configs/demo-onestep.toml
	$(VENV)/bin/unigs-train configs/demo-pixel.toml
	$(VENV)/bin/unigs-train configs/demo-vae-decoder.toml
	$(VENV)/bin/unigs-train configs/demo-tiny-vae.toml
	$(VENV)/bin/unigs-train configs/demo-128.toml
	$(VENV)/bin/unigs-train configs/demo-128-continued.toml
	$(VENV)/bin/unigs-train configs/demo-128-separation.toml
	$(VENV)/bin/unigs-train configs/demo-128-separation-2.toml
	$(VENV)/bin/unigs-train configs/demo-128-unrolled.toml
	$(VENV)/bin/unigs-train configs/demo-128-unrolled-2.toml
	$(VENV)/bin/unigs-train configs/demo-128-frozen-text.toml
	$(VENV)/bin/unigs-train configs/demo-128-frozen-text-2.toml
	$(VENV)/bin/unigs-train configs/demo-128-pooled.toml
	$(VENV)/bin/unigs-train configs/demo-128-kind-text.toml
	$(PY) -m unigs_deploy.training.ship runs/demo-128-kind-text/model --tiny-vae runs/demo-tiny-vae/model \
		--task-defaults configs/demo-task-defaults.json
	$(VENV)/bin/unigs-train configs/probe-kind-128.toml
	$(VENV)/bin/unigs-train configs/probe-kind-128.toml --resume --set train.stop_at=1500
	rm -rf runs/probe-kind-long && cp -r runs/probe-kind-128 runs/probe-kind-long && rm -rf runs/probe-kind-long/model
	$(VENV)/bin/unigs-train configs/probe-kind-long.toml --resume
	$(VENV)/bin/unigs-train configs/probe-teachers-strong.toml --set train.stop_at=500
	$(VENV)/bin/unigs-train configs/probe-teachers-strong.toml --resume
	$(PY) -m unigs_deploy.training.reranker --out runs/demo-reranker --outliers 0.3
	$(PY) -m unigs_deploy.training.ship runs/probe-teachers-strong/model --tiny-vae runs/demo-tiny-vae/model \
		--reranker runs/demo-reranker --task-defaults configs/demo-task-defaults.json

test: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# the edit-test loop: everything but the tests marked slow (whole-model exports, training, benchmarks)
test-fast: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow"

# On a machine with an NVIDIA GPU and TensorRT 10: build, check and time the TensorRT engines
# (benchmarks/results/gpu-check.{json,md}). Elsewhere it says so in one line and succeeds.
gpu-check: $(VENV)/.dev
	@$(VENV)/bin/unigs-bench gpu-check; rc=$$?; [ $$rc -eq 3 ] || exit $$rc

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .

# every benchmark (~40 min on 2 cores, ~20 GB peak): results JSON, REPORT.md, README Performance block
bench: $(VENV)/.dev
	$(VENV)/bin/unigs-bench all --workdir benchmarks/work --readme README.md

# libunigs.so + unigs.h + unigs.pc in build/capi (cffi embedding of the lean runtime)
capi: $(VENV)/.dev
	$(PY) capi/build.py --out build/capi
	gcc -O2 examples/c/segment.c -Ibuild/capi/include -Lbuild/capi/lib -Wl,-rpath,$(CURDIR)/build/capi/lib \
		-lunigs -o build/capi/segment
	@echo "example: build/capi/segment --decode colormap.ppm labels.raw"

clean:
	rm -rf $(VENV) demo_out .pytest_cache build
