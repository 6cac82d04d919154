#!/bin/sh
# Installs Transfer Studio @VERSION@ from this folder, without any network connection.
#
#   sh install.sh [FOLDER]
#
# FOLDER (default: ~/.local/share/transfer-studio) receives a Python virtual environment with the app. Needs Python
# @PYTHON@ (the wheels in this kit are made for it); set PYTHON=/path/to/python@PYTHON@ to choose one. The kit's weights
# are added to the app's model library, and on Linux the app gets a menu entry that also opens .tsproj projects.
# Set TRANSFER_STUDIO_NO_DESKTOP=1 to skip the menu entry.
set -eu

KIT=$(cd "$(dirname "$0")" && pwd)
TARGET=${1:-${XDG_DATA_HOME:-$HOME/.local/share}/transfer-studio}
WANT=@PYTHON@

fail() {
    echo "Transfer Studio was not installed: $*" >&2
    exit 1
}

PY=""
for candidate in ${PYTHON:-} python$WANT python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then
        version=$("$candidate" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
        if [ "$version" = "$WANT" ]; then
            PY=$candidate
            break
        fi
    fi
done
[ -n "$PY" ] || fail "this kit needs Python $WANT, which was not found. Install Python $WANT (python.org, or your system's packages: python$WANT and python$WANT-venv), or set PYTHON=/path/to/python$WANT, and run this script again."

echo "Installing Transfer Studio @VERSION@ into $TARGET with $PY ..."
mkdir -p "$TARGET" || fail "the folder $TARGET cannot be made: choose another one (sh install.sh FOLDER)."
"$PY" -m venv "$TARGET/venv" || fail "Python could not make a virtual environment in $TARGET/venv (on Debian and Ubuntu, install the python$WANT-venv package first)."
APP_PY="$TARGET/venv/bin/python"
# --isolated: no pip configuration of this computer can point pip at an index; --no-index: only the kit's wheels.
"$APP_PY" -m pip --isolated --disable-pip-version-check install --no-index --find-links "$KIT/wheels" "transfer-studio==@VERSION@" \
    || fail "pip could not install the kit's wheels (see above): the kit may be incomplete or made for another system; make it again with pack-offline on a computer like this one."

if [ -f "$KIT/weights/weights.json" ]; then
    "$APP_PY" -m engine.kit register-weights "$KIT/weights" || fail "the kit's weights could not be added to the model library (see above)."
fi

if [ "$(uname -s)" = "Linux" ] && [ -z "${TRANSFER_STUDIO_NO_DESKTOP:-}" ]; then
    "$APP_PY" -m engine.kit desktop "$TARGET/venv/bin/transfer-studio" >/dev/null \
        && echo "Added Transfer Studio to the applications menu (it also opens .tsproj projects)." \
        || echo "The menu entry could not be added; start the app with $TARGET/venv/bin/transfer-studio"
fi

echo "Transfer Studio is installed. Start it from the applications menu, or with:"
echo "  $TARGET/venv/bin/transfer-studio"
