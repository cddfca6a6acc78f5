# The two commands of the README. Each does its own set-up on a fresh machine.
.PHONY: run test setup clean
run:  ## the main job
	bash ci/run.sh
test:  ## the whole test suite (lint, format, pytest)
	bash ci/test.sh
setup:
	bash ci/setup.sh all
clean:
	rm -rf .venv .venvs runs
