# charnn: every target creates the virtual environment it needs; a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORPUS := data/tinyshakespeare.txt
STAMP := $(VENV)/.installed

.PHONY: help install test train sample gradcheck bench bench-workers bench-corpus clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/'

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install charnn with its test extra (editable)

test: $(STAMP) ## run the test suite
	$(BIN)/python -m pytest

train: $(STAMP) ## train the default LSTM on tiny shakespeare for 9 1/2 minutes of training time (10 minutes in all)
	$(BIN)/charnn train $(CORPUS) --time-budget 9m30s

sample: $(STAMP) ## print text from the newest trained model
	$(BIN)/charnn sample --seed "ROMEO:" --length 600 --temperature 0.8

gradcheck: $(STAMP) ## check RNN, LSTM and GRU gradients against finite differences
	$(BIN)/charnn gradcheck --model rnn
	$(BIN)/charnn gradcheck --model lstm
	$(BIN)/charnn gradcheck --model gru

bench: $(STAMP) ## time training, sampling and encoding (add TORCH_PYTHON=path/to/python to compare with PyTorch)
	$(BIN)/charnn bench --rounds 3 --json checkpoints/bench.json $(if $(TORCH_PYTHON),--torch-python $(TORCH_PYTHON))

bench-workers: $(STAMP) ## time one process against 2 data-parallel workers, and the scaling model (add TORCH_PYTHON=path/to/python)
	$(BIN)/charnn bench --workers 2 --rounds 3 --json checkpoints/bench-workers.json $(if $(TORCH_PYTHON),--torch-python $(TORCH_PYTHON))

bench-corpus: $(STAMP) ## what a large corpus costs: time to the first step, memory, evaluation (MB=100; WORK=a folder with room for 2 x MB)
	$(BIN)/charnn bench --corpus-mb $(or $(MB),100) $(if $(WORK),--work-dir $(WORK))

clean: ## remove the virtual environment and caches (keeps checkpoints)
	rm -rf $(VENV) .pytest_cache *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
