"""Any autoencoder: a user's plain nn.Module encoder and decoder trained and diagnosed by the
CLI (model=custom), and the Doctor callback in a plain Lightning Trainer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from aelab.data.sources import synthetic_images
from aelab.models.custom import ModuleAutoencoder

from conftest import DATA_DIR, REPO, TINY
from events import load_events

USER_MODULE = textwrap.dedent('''
    from torch import nn

    class Encoder(nn.Module):
        def __init__(self, image_shape, code_dim=16, width=32):
            super().__init__()
            c, h, w = image_shape
            self.net = nn.Sequential(nn.Conv2d(c, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(8 * (h // 2) * (w // 2), width), nn.ReLU(),
                                     nn.Linear(width, code_dim))

        def forward(self, x):
            return self.net(x)

    class Decoder(nn.Module):
        def __init__(self, code_dim=16):  # takes no image_shape: aelab must not pass it
            super().__init__()
            self.net = nn.Sequential(nn.Linear(code_dim, 8 * 14 * 14), nn.ReLU(),
                                     nn.Unflatten(1, (8, 14, 14)),
                                     nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Sigmoid())

        def forward(self, z):
            return self.net(z)
''')


def test_model_custom_trains_and_diagnoses_a_users_modules(tmp_path):
    (tmp_path / "mymodels.py").write_text(USER_MODULE)
    env = {**os.environ, "AELAB_DATA_DIR": str(DATA_DIR),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', REPO)}"}
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "aelab", *TINY, "trainer.max_epochs=2", "model=custom",
         "model.encoder._target_=mymodels.Encoder", "model.decoder._target_=mymodels.Decoder",
         "+model.encoder.width=24", "loss=bce", f"hydra.run.dir={out}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    layers = result["diagnostics_layers"]
    assert layers["h1"] == "encoder.net.1 (ReLU)" and layers["out"] == "decoder.net.4 (Sigmoid)"
    assert layers["h3"] == "code_stage (Identity)"  # the code: the encoder's Linear output
    final = result["diagnostics"]
    assert {"weights/gain/W5", "units/dead/h1", "rank/code", "grads/data/W1"} <= set(final)
    assert "weights/gain/W6" not in final  # 2 conv + 2 linear + linear + transposed conv = 5
    assert result["diagnosis"]["symptom"] in ("healthy", "blob")


def test_module_autoencoder_interface_on_an_mlp_with_a_sigmoid_code():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3), nn.Sigmoid())
    dec = nn.Sequential(nn.Linear(3, 16), nn.Unflatten(1, (1, 4, 4)))  # returns logits
    net = ModuleAutoencoder(enc, dec, (1, 4, 4), output_activation="sigmoid")
    x = torch.rand(5, 16)
    assert [type(m).__name__ for m in net.weight_layers()] == ["Linear"] * 3
    assert [type(a).__name__ for a in net.activations()] == ["Tanh", "Sigmoid", "Sigmoid"]
    assert net.code_layer == 1 and net.code_dim == 3
    pre, post = net.trace(x)
    assert torch.allclose(post[1], net.encode(x)) and torch.allclose(pre[-1], net(x))
    assert torch.allclose(post[-1], torch.sigmoid(net(x)))
    assert net.first_layer_filters().shape == (8, 1, 4, 4)


def test_module_autoencoder_takes_the_logits_before_the_decoders_sigmoid():
    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
    net = ModuleAutoencoder(enc, dec, (1, 4, 4))  # an Unflatten after the Sigmoid
    assert isinstance(net.output_activation, nn.Identity)  # so the output is taken as it is
    dec2 = nn.Sequential(nn.Linear(4, 16), nn.Unflatten(1, (1, 4, 4)), nn.Sigmoid())
    net2 = ModuleAutoencoder(enc, dec2, (1, 4, 4))
    assert net2.output_activation is dec2[2]
    x = torch.rand(3, 16)
    assert torch.allclose(torch.sigmoid(net2(x)), dec2(enc(x.view(3, 1, 4, 4))).flatten(1))


# ---------------------------------------------------------------- plain Lightning + Doctor


class PlainAE(L.LightningModule):
    """A user's conv autoencoder as in Lightning's own example: encoder and decoder
    attributes, nothing of aelab's. `code`: the code layer's activation."""

    def __init__(self, code: type[nn.Module], code_bias: float = 0.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(8 * 14 * 14, 16), code())
        self.decoder = nn.Sequential(nn.Linear(16, 8 * 14 * 14), nn.ReLU(),
                                     nn.Unflatten(1, (8, 14, 14)),
                                     nn.ConvTranspose2d(8, 1, 4, 2, 1), nn.Sigmoid())
        with torch.no_grad():  # the user's own init pushes every code unit far on
            self.encoder[3].bias.fill_(code_bias)

    def training_step(self, batch, batch_idx):
        x = batch[0]
        loss = F.mse_loss(self.decoder(self.encoder(x)), x)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def fit_plain(code: type[nn.Module], folder: Path):
    from aelab import Doctor

    torch.manual_seed(0)
    images = synthetic_images(768, seed=0).unsqueeze(1)
    loader = DataLoader(TensorDataset(images), batch_size=32, shuffle=True)
    doctor = Doctor(probe_size=128)
    trainer = L.Trainer(max_epochs=4, callbacks=[doctor], default_root_dir=folder,
                        logger=L.pytorch.loggers.TensorBoardLogger(folder, name="tb"),
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    trainer.fit(PlainAE(code, code_bias=8.0), loader)
    return doctor, load_events(Path(trainer.logger.log_dir))


def test_doctor_in_a_plain_lightning_trainer_names_a_saturated_sigmoid_code(tmp_path):
    torch.set_num_threads(1)
    doctor, acc = fit_plain(nn.Sigmoid, tmp_path / "sigmoid")
    found = doctor.diagnosis
    assert found["symptom"] in ("frozen", "blob"), found
    top = found["causes"][0]
    assert top["cause"] == "saturation" and "encoder.4 (Sigmoid)" in top["evidence"]["layer"]
    assert "doctor/diagnosis/text_summary" in acc.Tags()["tensors"]  # in the user's logger
    assert [s.value for s in acc.Scalars("doctor/saturation")] == [pytest.approx(top["confidence"])]
    assert "units/saturation/h2" in acc.Tags()["scalars"]

    relu, acc = fit_plain(nn.ReLU, tmp_path / "relu")
    assert relu.diagnosis["symptom"] == "healthy" and relu.diagnosis["causes"] == []
    assert [s.value for s in acc.Scalars("doctor/causes")] == [0.0]


def test_aelabs_own_diagnostics_on_a_plain_module_point_to_the_doctor(tmp_path):
    from aelab.diagnostics.callback import Diagnostics

    loader = DataLoader(TensorDataset(synthetic_images(64, seed=0).unsqueeze(1)), batch_size=32)
    trainer = L.Trainer(max_epochs=1, callbacks=[Diagnostics()], default_root_dir=tmp_path,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False)
    with pytest.raises(AttributeError, match="from aelab import Doctor"):
        trainer.fit(PlainAE(nn.ReLU), loader)
