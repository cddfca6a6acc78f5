# The two commands of the README (each does its own set-up on a fresh machine), and helpers for contributors.
#   make run [ENGINE=auto|sglang|vllm|sglang-cpu|vllm-cpu]   every notebook, executed (SGLang: GPU or CPU)
#   make test                                the whole test suite
#   make test-fast                           the inner loop: no engine, notebook, browser or set-up test
#   make lab                                 JupyterLab on 127.0.0.1 with the cookbook's kernel
#   make docs [RUN=runs/latest]              the docs site in site/, from an executed run
#   make upstream-check [UPSTREAM=DIR_OR_URL]   data/ against SGLang's own cookbook files
.PHONY: run test test-fast setup plan lab docs upstream-check clean
RUN ?= runs/latest
ENGINE ?= auto
export ENGINE
run:  ## the main job (RUN_ARGS: extra arguments for cookbook run, e.g. --cell-timeout 1200)
	bash ci/run.sh $(RUN_ARGS)
test:  ## the whole test suite (lint, format, pytest)
	bash ci/test.sh
test-fast:  ## lint, format and the tests that need only .venv (about two minutes)
	bash ci/test.sh --fast
setup:  ## what this machine's engine needs, without running the notebooks
	bash ci/setup.sh machine
plan:  ## what set-up would install here, and which engine the notebooks would use
	bash ci/setup.sh plan
lab:  ## JupyterLab with the "LFM2.5 cookbook" kernel (on a remote box: ssh -L 8888:127.0.0.1:8888)
	bash ci/setup.sh main
	# As root (containers, some cloud images) JupyterLab refuses to start without --allow-root.
	.venv/bin/jupyter lab --ip 127.0.0.1 --port 8888 --no-browser --notebook-dir notebooks \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root)
docs:  ## the docs site from the executed notebooks of $(RUN) (make run first)
	bash ci/setup.sh main
	.venv/bin/cookbook docs --run $(RUN) --out site
upstream-check:  ## data/ against SGLang's cookbook files (UPSTREAM: a folder or base URL; default its main branch)
	bash ci/setup.sh main
	.venv/bin/cookbook upstream-check $(if $(UPSTREAM),--source "$(UPSTREAM)")
clean:  ## removes only the environments set-up made (.cookbook-made), and runs/
	for d in .venv .venvs/*; do \
	  if [ -f "$$d/.cookbook-made" ] || [ -f "$$d/.stamp" ]; then rm -rf "$$d"; fi; done
	rm -rf runs site build/docs
