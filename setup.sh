#!/usr/bin/env bash
# Set up .venv with listcopy and everything its commands need (idempotent).
# torch 2.13.0 (CPU build) is installed first, so no dependency pulls a multi-GB CUDA build.
#   bash setup.sh          the package and its CLI (.venv/bin/listcopy)
#   bash setup.sh --test   also the test tools, the [sae] extra (SAELens; it pins TransformerLens
#                          to 3.x, so CI runs every test under 3.9) and Debian's Chromium +
#                          ChromeDriver for the report's browser tests (apt-get, as root, only if missing)
set -euo pipefail
cd "$(dirname "$0")"
extras="."
if [ "${1:-}" = "--test" ]; then
    extras=".[test,sae]"
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
fi
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
pip_install() {
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check "$@" >.venv/pip.log 2>&1; then
        cat .venv/pip.log >&2
        echo "setup.sh: pip install $* failed" >&2
        exit 1
    fi
}
pip_install torch==2.13.0
pip_install -e "$extras"
.venv/bin/python -c "import listcopy, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "setup.sh: .venv ready (listcopy CLI at .venv/bin/listcopy)"
