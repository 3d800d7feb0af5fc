"""`python -m aelab.figures`: one panel per run of a tiny study made through the CLI."""

import numpy as np
import PIL.Image
import pytest

from aelab.analysis.figures import DIGITS, FILTERS, RECONSTRUCTIONS, last_images, main

from conftest import TINY, run_cli


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("figures")
    tiny = [o for o in TINY if not o.startswith("trainer.max_epochs")]
    proc = run_cli("-m", *tiny, "trainer.max_epochs=2", "loss=mse,bce", "hydra.sweep.dir=study",
                   cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd / "study"


def test_the_figure_has_a_panel_per_run_and_is_not_blank(study, tmp_path, capsys):
    out = tmp_path / "figure.png"
    assert main([str(study), "--out", str(out), "--columns", "2", "--dpi", "50"]) == 0
    assert "(2 runs)" in capsys.readouterr().out
    image = np.asarray(PIL.Image.open(out).convert("L"), dtype=float)
    assert image.shape == (round(4.6 * 50), round(2 * 3.2 * 50))  # one row of two panels
    assert image.std() > 20  # digits, filters and curves, not a white page
    assert out.stat().st_size < 300_000
    assert PIL.Image.open(out).mode == "P"  # the default palette
    full = tmp_path / "full.png"
    assert main([str(study), "--out", str(full), "--columns", "2", "--dpi", "50",
                 "--colors", "0"]) == 0
    assert PIL.Image.open(full).mode in ("RGB", "RGBA")
    rgb = np.asarray(PIL.Image.open(full).convert("L"), dtype=float)
    assert np.abs(rgb - image).mean() < 2  # the palette changes little


def test_the_panels_read_the_last_images_of_each_run(study):
    run = next(p for p in study.iterdir() if "loss=bce" in p.name)
    images = last_images(run, (RECONSTRUCTIONS, FILTERS, "no/such/tag"))
    assert set(images) == {RECONSTRUCTIONS, FILTERS}
    recon = images[RECONSTRUCTIONS]
    assert recon.shape[0] == 2 * 30 and recon.shape[1] >= DIGITS * 30  # inputs above outputs
    assert images[FILTERS].shape[0] == images[FILTERS].shape[1]  # 10 x 10 tiles of 30 px


def test_select_keeps_matching_runs_and_refuses_an_empty_choice(study, tmp_path, capsys):
    out = tmp_path / "one.png"
    assert main([str(study), "--out", str(out), "--select", "loss=mse"]) == 0
    assert "(1 runs)" in capsys.readouterr().out
    assert main([str(study), "--out", str(tmp_path / "none.png"), "--select", "loss=l1"]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert not (tmp_path / "none.png").exists()
    assert main([str(study), "--out", str(out), "--drop", "loss=mse"]) == 0
    assert "(1 runs)" in capsys.readouterr().out
    assert main([str(study), "--out", str(out), "--drop", "loss=mse", "--drop", "loss=bce"]) == 2
    assert "dropped" in capsys.readouterr().err
    assert main([str(study), "--out", str(out), "--drop", "mse"]) == 2
    assert "--drop expects key=value" in capsys.readouterr().err
