# The two commands of the README's quick start.
.PHONY: demo test setup fuzz

setup:
	./scripts/setup.sh

## demo: install prerequisites, build, and run the self-contained sandbox.
demo: setup
	cargo run --quiet --bin airlock -- demo

## test: install prerequisites, then everything CI checks.
test: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings
	cargo deny --locked check licenses bans sources
	cargo test --workspace --locked

## fuzz: coverage-guided fuzzing of every target, FUZZ_SECONDS each (by hand; docs/security.md).
fuzz:
	./scripts/fuzz.sh $(or $(FUZZ_SECONDS),60)
