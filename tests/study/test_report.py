"""report: every figure renders as a PNG and the page embeds each one (tiny BERT study)."""

import base64
import re

import pytest
from helpers import tiny_config

from ntk_advisor.study.report import ReportError, write_report
from ntk_advisor.study.validate import validate

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def study(tiny_model_folder, tiny_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "study"
    validate(tiny_config(tiny_model_folder, tiny_csv, lambdas=(0.0, 1.0)), out)
    return out


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page)]


@pytest.mark.parametrize("kind,relative,figures,titles", [
    ("validate", ".", 9, ["Predicted vs measured: objective:alignment", "Every predictor",
                           "The advised placement on the model", "Loss curves", "Proximal strength sweep",
                           "Where the kernel lives"]),
    ("profile", "profile", 3, ["Where the kernel lives", "Spectra", "Row and column scores"]),
    ("run", "runs/advised/seed-0", 2, ["Loss curve", "Placement"]),
])
def test_each_folder_kind_renders_every_figure(study, tmp_path, kind, relative, figures, titles):
    out = tmp_path / "page" / "report.html"
    written = write_report(study / relative, out)
    page = out.read_text()
    images = embedded_pngs(page)
    assert written == {"kind": kind, "figures": len(images)}
    assert len(images) >= figures - 1  # the best-predictor scatter is skipped when it is alignment itself
    assert all(image.startswith(PNG) and len(image) > 5_000 for image in images)
    for title in titles:
        assert f'alt="{title}"' in page
    assert not list(out.parent.glob(".report.html.*"))  # written whole, no temporary left


def test_not_a_known_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="not a profile, validate or run folder"):
        write_report(tmp_path, tmp_path / "r.html")
    with pytest.raises(ReportError, match="not a folder"):
        write_report(tmp_path / "missing", tmp_path / "r.html")
