# QGIS side of GeoReasoner: included by the main Makefile (`include mk/qgis.mk`).
#   make qgis-deps     QGIS 3.40 LTR (bookworm-backports), xvfb, lrelease, pylupdate5 via apt (idempotent)
#   make test-qgis     the plugin tests in QGIS's own Python, headless, against a live backend subprocess
#   make plugin-zip    dist/georeasoner_plugin-<version>.zip (python build.py)
#   make screenshot    QGIS with the dock answering over the NAIP image, under Xvfb -> docs/screenshot.png
#   make translations  refresh i18n/*.ts from the code's tr() strings
# Needs from the main Makefile: $(STAMP) (the backend venv is installed) and $(BACKEND_PY).

QGIS_VENV ?= .venv-qgis
QGIS_PY := $(QGIS_VENV)/bin/python
QGIS_STAMP := $(QGIS_VENV)/.georeasoner-qgis-installed
QGIS_TEST_HOME ?= $(CURDIR)/.cache/qgis-test-home
QGIS_PYTEST_ARGS ?=
SCREENSHOT ?= docs/screenshot.png
# Headless QGIS: no display, a throw-away QGIS profile folder.
QGIS_TEST_ENV := QT_QPA_PLATFORM=offscreen XDG_DATA_HOME=$(QGIS_TEST_HOME)/data \
  XDG_RUNTIME_DIR=$(QGIS_TEST_HOME)/run GEOREASONER_BACKEND_PYTHON=$(CURDIR)/$(BACKEND_PY) \
  GEOREASONER_TINY_DIR=$(CURDIR)/$(TINY_DIR)

.PHONY: qgis-deps qgis-setup test-qgis plugin-zip screenshot translations

qgis-deps:
	@bash mk/install-qgis.sh

# QGIS's interpreter with its own numpy/GDAL in charge; pip adds only test tools.
$(QGIS_STAMP): | qgis-deps
	@test -x $(QGIS_PY) || /usr/bin/python3 -m venv --system-site-packages $(QGIS_VENV)
	$(QGIS_PY) -m pip install -q --disable-pip-version-check 'pytest>=8' 'pytest-qgis>=5' 'hypothesis>=6.100'
	@touch $@

qgis-setup: qgis-deps $(QGIS_STAMP)

# -p no:hypothesispytest and --qgis_disable_exit: hypothesis's end-of-session hook imports modules
# after pytest-qgis has called exitQgis(), which crashes QGIS 3.40's import hook on the way out.
test-qgis: $(STAMP) qgis-setup
	@mkdir -p $(QGIS_TEST_HOME)/data $(QGIS_TEST_HOME)/run && chmod 700 $(QGIS_TEST_HOME)/run
	$(QGIS_TEST_ENV) $(QGIS_PY) -m pytest -q -p no:cacheprovider -p no:hypothesispytest --qgis_disable_exit \
	  tests/qgis $(QGIS_PYTEST_ARGS)

plugin-zip: qgis-deps
	/usr/bin/python3 build.py

translations: qgis-deps
	/usr/bin/python3 i18n/update_translations.py

screenshot: $(STAMP) qgis-setup
	@mkdir -p $(QGIS_TEST_HOME)/data $(QGIS_TEST_HOME)/run $(dir $(SCREENSHOT)) && chmod 700 $(QGIS_TEST_HOME)/run
	XDG_DATA_HOME=$(QGIS_TEST_HOME)/data XDG_RUNTIME_DIR=$(QGIS_TEST_HOME)/run \
	  GEOREASONER_BACKEND_PYTHON=$(CURDIR)/$(BACKEND_PY) GEOREASONER_TINY_DIR=$(CURDIR)/$(TINY_DIR) \
	  xvfb-run -a -s "-screen 0 1500x950x24" $(QGIS_PY) tests/qgis/screenshot.py $(SCREENSHOT)
