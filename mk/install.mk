# The real first-run install (included by the main Makefile):
#   make test-install   in a fresh QGIS profile, the set-up panel installs the backend venv for real (torch
#                       and the pinned packages: minutes and ~6 GB), doctor passes, the tiny models are picked
#                       and the first question is answered. Timings: out/install-timings.json.
.PHONY: test-install

test-install: $(STAMP) qgis-setup
	@mkdir -p $(QGIS_TEST_HOME)/data $(QGIS_TEST_HOME)/run out && chmod 700 $(QGIS_TEST_HOME)/run
	GEOREASONER_TEST_INSTALL=1 $(QGIS_TEST_ENV) $(QGIS_PY) -m pytest -q -s -p no:cacheprovider -p no:hypothesispytest \
	  --qgis_disable_exit tests/qgis/test_install_real.py
