# The real first-run install (included by the main Makefile):
#   make test-install   in a fresh QGIS profile, the set-up panel installs the backend venv for real (torch
#                       and the pinned packages: minutes and ~6 GB), doctor passes, the tiny models are picked
#                       and the first question is answered. Timings: out/install-timings.json.
#                       Its own XDG_CONFIG_HOME: QGIS settings of other test runs must not change its choices.
.PHONY: test-install

test-install: $(STAMP) qgis-setup
	@mkdir -p $(QGIS_TEST_HOME)/data $(QGIS_TEST_HOME)/run out && chmod 700 $(QGIS_TEST_HOME)/run
	GEOREASONER_TEST_INSTALL=1 XDG_CONFIG_HOME=$(QGIS_TEST_HOME)/config $(QGIS_TEST_ENV) $(QGIS_PY) -m pytest -q -s -p no:cacheprovider -p no:hypothesispytest \
	  --qgis_disable_exit tests/qgis/test_install_real.py

# Pictures of the set-up panel for the README (docs/setup-*.png), taken under Xvfb by its tests.
.PHONY: screenshot-setup
screenshot-setup: $(STAMP) qgis-setup
	@mkdir -p $(QGIS_TEST_HOME)/data $(QGIS_TEST_HOME)/run && chmod 700 $(QGIS_TEST_HOME)/run
	GEOREASONER_SHOTS=$(CURDIR)/docs XDG_CONFIG_HOME=$(QGIS_TEST_HOME)/config XDG_DATA_HOME=$(QGIS_TEST_HOME)/data XDG_RUNTIME_DIR=$(QGIS_TEST_HOME)/run \
	  GEOREASONER_BACKEND_PYTHON=$(CURDIR)/$(BACKEND_PY) GEOREASONER_TINY_DIR=$(CURDIR)/$(TINY_DIR) \
	  xvfb-run -a -s "-screen 0 1500x950x24" $(QGIS_PY) -m pytest -q -p no:cacheprovider -p no:hypothesispytest \
	  --qgis_disable_exit tests/qgis/test_setup_panel.py -k "first_open or wrong_token or demo"
