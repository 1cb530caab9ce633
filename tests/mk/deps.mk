# Host packages the tests use as oracles and tools (apt-get; see tests/deps/install.sh).
.PHONY: deps
deps:
	bash tests/deps/install.sh
