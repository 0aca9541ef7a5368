#!/usr/bin/env bash
# MONAI Label in its own virtual environment, beside this project's: monailabel 0.8.5 (its newest release) pins
# numpy below 2 through its DICOM dependencies, and its DICOM stack (pydicom-seg 0.4.1) needs pydicom 2, which
# newer dicomweb-client / pynetdicom releases no longer accept; this project's own environment keeps numpy 2.
#
#     bash tools/monailabel_env.sh [VENV_DIR]      # default: .venv-monailabel in the repository root (git-ignored)
#
# Then serve the bundles (see tools/monailabel_app/main.py):
#     .venv-monailabel/bin/monailabel start_server --app tools/monailabel_app --studies DIR --conf bundles cfm
# Takes about 5 minutes with a warm pip cache; the torch wheel is the same release as the project's (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-monailabel}"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q "monailabel==0.8.5" "monai>=1.6.1,<1.7" "pydicom<3" "dicomweb-client[gcp]<0.60" "pynetdicom<3"
python -m pip install -q -e .
python -c "import monailabel, monai, numpy; print(f'monailabel {monailabel.__version__}, monai {monai.__version__}, numpy {numpy.__version__}')"
python -c "from monailabel.interfaces.app import MONAILabelApp" # the DICOM stack imports (fails on a pydicom mismatch)
echo "MONAI Label environment ready: $VENV"
