# Entry points; each target is one script under scripts/.
.PHONY: demo test services-start services-stop services-status lint

# Replays an observing night against the site API and checks the result.
demo:
	bash scripts/demo.sh

# Starts the services when they are not running, then runs every test.
# OPSBUFFER_HEAVY_TESTS=1 adds the long fault and randomized scenarios.
test:
	bash scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

services-start:
	bash scripts/services.sh start

services-stop:
	bash scripts/services.sh stop

services-status:
	bash scripts/services.sh status
