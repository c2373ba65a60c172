"""lfads_tools.report: standalone HTML with sections, tables and embedded PNG figures."""

import base64
import re

import numpy as np
import pytest

import lds
from lds.errors import OverwriteError, ValidationError
from lfads_tools.report import Curve, build_report, write_report

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def embedded_pngs(text):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def rotation_lds():
    """Transition matrix with eigenvalues 0.9 e^{±i pi/6} and 0.5, known without computing them."""
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    A = np.zeros((3, 3))
    A[:2, :2] = 0.9 * np.array([[c, -s], [s, c]])
    A[2, 2] = 0.5
    base = lds.random_stable_lds(3, [6, 4], seed=1)
    return lds.KalmanParams(
        transition_matrix=A, process_noise_covariance=base.Q, initial_mean=base.m0,
        initial_covariance=base.V0, measurement_function=list(base.C), measurement_noise_covariance=list(base.R),
        dataset_names=base.dataset_names,
    )


def test_report_has_sections_tables_and_images(tmp_path):
    params = rotation_lds()
    curve = Curve("EM log-likelihood", np.arange(1, 6), {"log-likelihood": np.array([-9.0, -5, -4, -3.5, -3.4])})
    out = write_report(params, tmp_path / "report.html", title="My <LDS>", source="fit.h5", curves=[curve])
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "My &lt;LDS&gt;" in text  # escaped
    for section in ("overview", "summary", "eigenvalues", "readouts", "heatmaps", "curves"):
        assert f'<section id="{section}">' in text
    assert "KalmanParams with properties:" in text and "transition_matrix" in text
    assert "measurement_function[session_1]" in text  # per-dataset rows of the summary table
    assert "Spectral radius <strong>0.9</strong>" in text
    assert "30" in text and "-30" in text  # the eigenvalue angles, ±30 degrees
    images = embedded_pngs(text)
    # eigenvalues, one readout figure, heatmap figures for Dynamics / Observation / Initial state, curves
    assert len(images) == 6
    assert all(img.startswith(PNG_SIGNATURE) and len(img) > 2000 for img in images)
    assert "<img" in text and "http" not in text.split("<body>")[1].replace("lfads-tools", "")  # nothing external


def test_report_without_curves_or_readouts():
    params = lds.KalmanParams(transition_matrix=np.eye(2) * 0.5, measurement_function=np.ones((3, 2)))
    text = build_report(params, title="t")
    assert '<section id="curves">' not in text
    assert '<section id="eigenvalues">' in text and "Spectral radius <strong>0.5</strong>" in text


def test_report_refuses_overwrite_and_non_params(tmp_path):
    params = lds.KalmanParams(transition_matrix=[[0.5]], measurement_function=np.ones((3, 1)))  # few figures
    write_report(params, tmp_path / "r.html", title="t")
    with pytest.raises(OverwriteError):
        write_report(params, tmp_path / "r.html", title="t")
    write_report(params, tmp_path / "r.html", title="t2", overwrite=True)
    assert "<title>t2</title>" in (tmp_path / "r.html").read_text()
    with pytest.raises(ValidationError, match="parameter object"):
        build_report({"A": np.eye(2)}, title="t")


def test_fit_log_curves_in_a_report(tmp_path):
    from lfads_tools import FitLog
    from lfads_tools.demo import write_fit_log
    from lfads_tools.inspection import _fit_log_curves

    path = write_fit_log(tmp_path / "fitlog.csv", num_epochs=12, seed=0)
    log = FitLog(path)  # the run manager's parser reads the demo's rows
    assert log.n_epochs == 12 and log.lve_index is not None and log.kl_weight[-1] == 1.0
    curves = _fit_log_curves(path)
    assert [c.title for c in curves] == ["total cost", "reconstruction cost", "KL cost"]
    np.testing.assert_array_equal(curves[0].series["valid"], log.total_valid)
    assert f"epoch {int(log.epoch[log.lve_index])}" in curves[0].notes[0]
    text = build_report(lds.KalmanParams(transition_matrix=[[0.5]], measurement_function=np.ones((3, 1))),
                        title="t", curves=curves)
    assert '<section id="curves">' in text and "Lowest validation cost" in text
    assert len(embedded_pngs(text)) == 3  # eigenvalues, the 3x3 noise covariance, the three curve panels
