# Quick start on a fresh Debian 12 machine:  make demo   |   make test
# The command is then .venv/bin/dicom-gateway (make cannot put it on the calling shell's PATH;
# `. .venv/bin/activate` does).
# As root, missing Debian packages (python3-venv; for tests dcmtk dicom3tools socat) are installed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PEER_PACKAGES := dcmtk dicom3tools socat time chromium shellcheck dpkg-dev samba smbclient curl cifs-utils
PEER_PROGRAMS := storescp storescu echoscu findscu wlmscpfs dciodvfy socat /usr/bin/time chromium \
	shellcheck dpkg-shlibdeps smbd smbclient curl mount.cifs
IS_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)

# The appliance image (image-build/, docs/image.md): as root on Debian 12. What it needs from
# Debian is installed when missing. VARIANTS, SNAPSHOT, TRUSTED_ROOT: see image-build/build.sh.
IMAGE_PACKAGES := mmdebstrap qemu-user-static binfmt-support qemu-system-arm qemu-efi-aarch64 \
	mtools dosfstools fdisk bmap-tools e2fsprogs xz-utils git
IMAGE_PROGRAMS := mmdebstrap qemu-aarch64-static update-binfmts qemu-system-aarch64 mcopy \
	mkfs.vfat sfdisk bmaptool mkfs.ext4 xz git
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"$$/\1/p' gateway/__init__.py)
IMAGE ?= build/image/dicom-gateway-$(VERSION)-qemu-arm64.img

.PHONY: all venv peers lint test demo bench docs clean image image-tools image-test deb deb-test

all: test

# Quiet: pip's hundred lines before the demo's first one would bury it. On failure the log's
# end is shown and the stamp is not written, so the next make tries again.
$(BIN)/.installed: pyproject.toml
	@if ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  if [ "$(IS_ROOT)" = yes ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "python3-venv is missing: run 'sudo apt-get install python3-venv'" >&2; exit 1; fi; fi
	@echo "setting up $(VENV) (the first time takes a few minutes; pip's output: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@if ! { $(BIN)/pip install --upgrade pip && $(BIN)/pip install -e '.[test]'; } \
	    >$(VENV)/install.log 2>&1; then \
	  tail -n 40 $(VENV)/install.log >&2; \
	  echo "pip failed; the whole log: $(VENV)/install.log" >&2; exit 1; fi
	@touch $@

venv: $(BIN)/.installed

peers:
	@missing=""; for p in $(PEER_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(IS_ROOT)" = yes ]; then \
	    echo "installing test peers ($(PEER_PACKAGES)): missing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PEER_PACKAGES) >/dev/null; \
	  else echo "test peers missing:$$missing (apt-get install $(PEER_PACKAGES)); their tests will skip" >&2; fi; \
	fi

lint: venv
	$(BIN)/ruff check gateway tests bench
	$(BIN)/ruff format --check gateway tests bench
	$(BIN)/mypy gateway

# Not the image tests: they boot the built image under emulation for half an hour (make image-test).
test: venv peers lint
	$(BIN)/python -m pytest -m "not image" $(PYTEST_ARGS)

demo: venv
	$(BIN)/dicom-gateway demo $(DEMO_ARGS)

bench: venv peers
	$(BIN)/python -m bench.forward $(BENCH_ARGS)
	$(BIN)/python -m bench.mwl $(MWL_BENCH_ARGS)

docs: venv
	$(BIN)/python -m gateway.configdoc > docs/configuration-reference.md
	$(BIN)/python -m gateway.conformancedoc docs/conformance-statement.md

# dist/dicom-gateway_<version>_<arch>.deb for this machine's arch (image-build/deb/build.sh says
# what it needs): make deb TRUSTED_ROOT=REPO/metadata/root.json (or TRUSTED_ROOT=lab).
deb: venv
	TRUSTED_ROOT="$(TRUSTED_ROOT)" GATEWAY="$(BIN)/python -m gateway" PIP="$(BIN)/python -m pip" \
	    image-build/deb/build.sh

# The package built, inspected (dpkg-deb, lintian) and installed with apt into a Debian 12
# chroot (mmdebstrap; as root): the tests marked `deb`, which `make test` skips (about 8-10
# minutes on 2 cores; tests/test_deb.py). lintian, mmdebstrap and dpkg-dev are installed when root.
deb-test: venv
	@if [ "$(IS_ROOT)" = yes ] && ! command -v lintian mmdebstrap dpkg-shlibdeps >/dev/null; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian mmdebstrap dpkg-dev >/dev/null; fi
	$(BIN)/python -m pytest -q -m deb tests/test_deb.py $(PYTEST_ARGS)

image-tools:
	@missing=""; for p in $(IMAGE_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$(IS_ROOT)" = yes ]; then \
	    echo "installing the image tools ($(IMAGE_PACKAGES)): missing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(IMAGE_PACKAGES) >/dev/null; \
	  else echo "image tools missing:$$missing (apt-get install $(IMAGE_PACKAGES))" >&2; exit 1; fi; \
	fi

# Both variants, about 20-30 minutes the first time (dpkg and pip under qemu-user), a few
# minutes once build/image-cache holds the base rootfs, the wheels and the release bundle.
image: venv image-tools
	image-build/build.sh

# Boots $(IMAGE) under qemu-system-aarch64 (TCG): READY, the panel, a power cut and a reboot.
image-test: venv image-tools
	IMAGE=$(IMAGE) $(BIN)/python -m pytest -m image -p no:cacheprovider tests/image $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
