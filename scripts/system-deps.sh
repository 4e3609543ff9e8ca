#!/usr/bin/env bash
# System tools the test suite uses beyond Python: dciodvfy (Debian's dicom3tools, the DICOM
# validator) and redis-server (the Feast online store). Installs what is missing with apt when
# it can (root, or password-less sudo); otherwise names the packages in one line and returns 0,
# so the suite still runs (those tests then skip, saying why).
set -euo pipefail

need=()
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "system tools missing: ${need[*]} (no apt-get here: install them with your package manager; their tests skip until then)" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo)
else
  echo "system tools missing: ${need[*]} (run: sudo apt-get install ${need[*]}; their tests skip until then)" >&2
  exit 0
fi
"${sudo[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
