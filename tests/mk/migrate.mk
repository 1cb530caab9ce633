# Snapshot/migration benchmark against qemu-system-aarch64 7.2 (tests/migrate
# TestBenchMigrate): save-to-file time, stream size and restore-to-running time of a
# 512 MiB arm64 guest, alternating gemu and QEMU, medians and ratios. MIGRATE_RUNS=N.
MIGRATE_RUNS ?= 3
.PHONY: bench-migrate
bench-migrate: build
	GEMU_BENCH_MIGRATE=1 RUNS=$(MIGRATE_RUNS) GEMU_BIN=$(CURDIR)/bin $(GO) test -count=1 -timeout 60m -run '^TestBenchMigrate$$' -v ./tests/migrate
bench: bench-migrate
