#!/usr/bin/env bash
# Installs QGIS 3.40 LTR (bookworm-backports), xvfb, Qt's translation tools and PyQt6 on Debian 12.
# Idempotent: checks what is there first and runs `apt-get update` at most once.
set -euo pipefail

need=()
have_qgis() {
  /usr/bin/python3 - <<'PY' >/dev/null 2>&1
from qgis.core import Qgis
v = Qgis.QGIS_VERSION_INT
raise SystemExit(0 if v >= 34000 else 1)
PY
}
have_qgis || need+=(qgis)
command -v xvfb-run >/dev/null 2>&1 || need+=(xvfb)
command -v lrelease >/dev/null 2>&1 || [ -x /usr/lib/qt5/bin/lrelease ] || need+=(qttools5-dev-tools)
command -v pylupdate5 >/dev/null 2>&1 || need+=(pyqt5-dev-tools)
command -v qgis_process >/dev/null 2>&1 || need+=(qgis)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
# PyQt6 only for the test that imports every plugin module under Qt6 (QGIS 4 readiness)
/usr/bin/python3 -c 'import PyQt6.QtNetwork, PyQt6.QtWidgets' >/dev/null 2>&1 || need+=(python3-pyqt6)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "QGIS side needs: ${need[*]} -- run 'make qgis-deps' as root once" >&2
  exit 1
fi
echo "== installing for the QGIS side: ${need[*]}"

# bookworm-backports, from the same Debian mirror the machine already uses.
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  mirror=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
  fi
  if [ -z "$mirror" ]; then
    echo "cannot find the Debian mirror in /etc/apt/sources.list{,.d}; add bookworm-backports by hand" >&2
    exit 1
  fi
  cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=()
for n in "${need[@]}"; do
  case "$n" in
    qgis) ;;  # installed below from backports
    *) pkgs+=("$n") ;;
  esac
done
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi
if printf '%s\n' "${need[@]}" | grep -qx qgis; then
  apt-get install -y -qq --no-install-recommends -t bookworm-backports \
    python3-qgis qgis-providers qgis
fi
