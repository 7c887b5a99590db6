"""Probabilities beyond fcnseg predict: the ONNX export with a Softmax, and the service's confidence field."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_model

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.cli import main
from fcnseg.inference.confidence import read_unit_png16

CLASSES = ["background", "road", "car", "sky"]
PALETTE = [(0, 0, 0), (128, 64, 128), (64, 0, 128), (128, 128, 128)]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def checkpoint(tmp_path):
    model = tiny_model("fcn8s", len(CLASSES), score_std=0.1)  # small scores: probabilities neither 0 nor 1
    return save_checkpoint(tmp_path / "model.safetensors", model, classes=CLASSES, palette=PALETTE)


def test_export_with_probabilities_outputs_the_verified_softmax(tmp_path, checkpoint, capsys):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    from fcnseg.export.onnx import WithSoftmax, check_onnx_parity, read_onnx_metadata

    out = tmp_path / "probs.onnx"
    code = main(
        [
            "export",
            str(checkpoint),
            "--out",
            str(out),
            "--exporter",
            "torchscript",
            "--probabilities",
            "--check-shape",
            "1x3x19x23",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "-> ok" in printed and "max|probability|" in printed
    assert read_onnx_metadata(out)["output"] == "probabilities"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities"]
    model = fcnseg.checkpoint.load_checkpoint(checkpoint).model.eval()
    blob = fcnseg.preprocess(torch.randint(0, 256, (2, 3, 33, 45), dtype=torch.uint8), model.preprocessing)
    with torch.no_grad():
        expected = torch.softmax(model(blob), dim=1).numpy()  # the reference: torch's softmax of the logits
    (actual,) = session.run(None, {"input": blob.numpy()})
    assert expected.min() > 1e-3 and expected.max() < 0.999, (
        "probabilities must not saturate for the test to mean anything"
    )
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(actual.sum(1), 1.0, atol=1e-5)
    # The verification compares with the softmax: against the bare logits the same file fails.
    assert all(r.ok for r in check_onnx_parity(WithSoftmax(model), out, shapes=[(1, 3, 21, 17)]))
    assert not any(r.ok for r in check_onnx_parity(model, out, shapes=[(1, 3, 21, 17)]))

    plain = tmp_path / "logits.onnx"
    assert (
        main(
            ["export", str(checkpoint), "--out", str(plain), "--exporter", "torchscript", "--check-shape", "1x3x19x23"]
        )
        == 0
    )
    assert read_onnx_metadata(plain)["output"] == "logits"


def test_serve_adds_confidence_only_when_asked(checkpoint):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    httpx = pytest.importorskip("httpx", reason="httpx (test extra) is needed to call the service")
    from fcnseg.serve import create_app

    app = create_app(checkpoint)
    picture = np.random.default_rng(0).integers(0, 256, (30, 42, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")

    def post(query: str) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://fcnseg.test"
            ) as client:
                return await client.post(f"/segment?{query}", files={"file": ("p.png", buffer.getvalue(), "image/png")})

        return asyncio.run(send())

    plain = post("format=json")
    assert plain.status_code == 200 and "confidence" not in plain.json()
    body = post("format=json&confidence=true").json()
    assert set(body) == set(plain.json()) | {"confidence"}
    predictor, _ = fcnseg.inference.predictor.load_predictor(checkpoint, device="cpu")
    top1 = torch.softmax(predictor.logits(torch.from_numpy(picture).permute(2, 0, 1).contiguous()), 0).max(0).values
    assert body["confidence"]["mean_top1"] == pytest.approx(float(top1.mean()), abs=1e-6)
    decoded = read_unit_png16(io.BytesIO(base64.b64decode(body["confidence"]["top1_png"])))
    np.testing.assert_allclose(decoded, top1.numpy(), rtol=0, atol=1e-5)
    mask_png = post("format=png&confidence=true")  # the PNG answer stays the mask alone
    assert mask_png.headers["content-type"] == "image/png" and mask_png.content == post("format=png").content
