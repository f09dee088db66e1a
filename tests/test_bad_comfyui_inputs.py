"""Hostile and careless inputs to the ComfyUI nodes (issue "Hardened edges", item 8 and "ComfyUI"): names stay inside
ComfyUI's folders, wrong IMAGE/LATENT values and enum choices are named in ComfyUI's terms, and nothing is written.
Table-driven: each row is one case, run against the stubbed ``folder_paths`` tree of tests/test_comfyui_nodes.py."""

from __future__ import annotations

import types

import pytest
import torch

from tests.test_comfyui_nodes import comfy  # noqa: F401  (the fixture)

OUTSIDE = "leads outside .*; use a name inside that folder \\(no absolute path, no '..'\\)"
IMAGE_RANGE = "but a ComfyUI IMAGE is float in \\[0, 1\\]; divide 0..255 values by 255"


def _image(fill=0.5, shape=(1, 32, 32, 3), dtype=torch.float32):
    return torch.full(shape, fill, dtype=dtype)


def _latent(shape=(1, 12, 2, 2), fill=0.0, dtype=torch.float32):
    return {"samples": torch.full(shape, fill, dtype=dtype)}


def _splat(c, mesh="bunny.obj", prefix="atoken/splat", gs="(embedded default)"):
    return c.nodes.ATokenMeshToSplat().convert(c.tiny(), gs, mesh, prefix)


def _load(model="tiny", dtype="fp32", device="cpu"):
    return lambda c: c.nodes.ATokenLoader().load(model, dtype, device)


CASES = {
    # name: (call(c), exception, message)
    "loader: ../../.. out of models/atoken": (_load("../../.."), ValueError, "model '../../..' " + OUTSIDE),
    "loader: ../ to a sibling folder": (_load("../input"), ValueError, OUTSIDE),
    "loader: absolute path": (lambda c: _load(str(c.root / "models" / "atoken" / "tiny"))(c), ValueError, OUTSIDE),
    "loader: empty name": (_load(""), ValueError, "model is empty; choose or type a name inside"),
    "loader: the placeholder entry": (_load("(put models in models/atoken)"), FileNotFoundError,
                                      "not found in .*put a converted folder"),
    "loader: missing model": (_load("missing"), FileNotFoundError, "AToken model 'missing' not found"),
    "loader: unknown dtype": (_load(dtype="fp64"), ValueError, "dtype 'fp64' is not one of fp32, bf16, fp16; pick"),
    "loader: dtype of another type": (_load(dtype=None), ValueError, "dtype None is not one of"),
    "loader: unknown device": (_load(device="tpu"), ValueError, "device 'tpu' is not one of auto, cpu, cuda"),
    "splat: prefix ../../escape": (lambda c: _splat(c, prefix="../../escape/splat"), ValueError,
                                   "filename_prefix '../../escape/splat' " + OUTSIDE),
    "splat: absolute prefix": (lambda c: _splat(c, prefix=str(c.root.parent / "abs" / "splat")), ValueError,
                               "filename_prefix .*" + OUTSIDE),
    "splat: prefix without a file name": (lambda c: _splat(c, prefix="atoken/"), ValueError,
                                          "filename_prefix 'atoken/' has no file name"),
    "splat: empty prefix": (lambda c: _splat(c, prefix=""), ValueError, "filename_prefix is empty"),
    "splat: mesh of ../ steps to a system file": (lambda c: _splat(c, mesh="../" * 12 + "etc/passwd"), ValueError,
                                                  "mesh '(\\.\\./)+etc/passwd' " + OUTSIDE),
    "splat: absolute mesh path": (lambda c: _splat(c, mesh="/etc/passwd"), ValueError, "mesh '/etc/passwd' " + OUTSIDE),
    "splat: empty mesh": (lambda c: _splat(c, mesh=""), ValueError, "mesh is empty"),
    "splat: mesh of an unknown type": (lambda c: _splat(c, mesh="notes.txt"), ValueError,
                                       "mesh 'notes.txt' is not one of .glb, .gltf, .obj, .ply, .stl"),
    "splat: missing mesh": (lambda c: _splat(c, mesh="missing.obj"), FileNotFoundError,
                            "mesh 'missing.obj' not found in ComfyUI's input folder"),
    "splat: Gaussian decoder out of models/atoken": (lambda c: _splat(c, gs="../../x"), ValueError, OUTSIDE),
    "encode: IMAGE in 0..255": (lambda c: c.nodes.ATokenEncode().encode(c.tiny(), _image(255.0)), ValueError,
                                "image has values in \\[255, 255\\] " + IMAGE_RANGE),
    "encode: IMAGE in -1..1": (lambda c: c.nodes.ATokenEncode().encode(c.tiny(), _image(-1.0)), ValueError,
                               IMAGE_RANGE),
    "encode: NaN in the IMAGE": (lambda c: c.nodes.ATokenEncode().encode(c.tiny(), _image(float("nan"))), ValueError,
                                 "image contains NaN/Inf values; check the node that produced it"),
    "encode: uint8 IMAGE": (lambda c: c.nodes.ATokenEncode().encode(c.tiny(), _image(3, dtype=torch.uint8)),
                            ValueError, "image has dtype torch.uint8; a ComfyUI IMAGE is float in \\[0, 1\\]"),
    "encode: empty IMAGE batch": (lambda c: c.nodes.ATokenEncode().encode(c.tiny(), _image(shape=(0, 32, 32, 3))),
                                  ValueError, "image is empty: shape \\(0, 32, 32, 3\\); connect an IMAGE"),
    "VAEEncode: empty IMAGE batch": (lambda c: c.tiny().vae.encode(_image(shape=(0, 32, 32, 3))), ValueError,
                                     "empty IMAGE .*connect one with at least one"),
    "VAEEncode: IMAGE in 0..255": (lambda c: c.tiny().vae.encode(_image(200.0)), ValueError, IMAGE_RANGE),
    "embed: IMAGE in 0..255": (lambda c: c.nodes.ATokenEmbed().embed(c.tiny(), _image(255.0)), ValueError,
                               IMAGE_RANGE),
    "tokenize: IMAGE in 0..255": (lambda c: c.nodes.ATokenTokenize().tokenize(c.fsq(), _image(255.0)), ValueError,
                                  IMAGE_RANGE),
    "decode: empty LATENT batch": (lambda c: c.nodes.ATokenDecode().decode(c.tiny(), _latent((0, 12, 2, 2))),
                                   ValueError, "samples is an empty LATENT batch \\(shape \\(0, 12, 2, 2\\)\\)"),
    "VAEDecode: empty LATENT batch": (lambda c: c.tiny().vae.decode(torch.zeros(0, 12, 1, 2, 2)), ValueError,
                                      "samples is an empty LATENT batch"),
    "VAEDecodeTiled: empty LATENT batch": (lambda c: c.tiny().vae.decode_tiled(torch.zeros(0, 12, 2, 2)), ValueError,
                                           "samples is an empty LATENT batch"),
    "decode: latent without cells": (lambda c: c.nodes.ATokenDecode().decode(c.tiny(), _latent((1, 12, 0, 2))),
                                     ValueError, "empty LATENT batch"),
    "decode: NaN latent": (lambda c: c.nodes.ATokenDecode().decode(c.tiny(), _latent(fill=float("inf"))), ValueError,
                           "samples contains NaN/Inf values"),
    "decode: integer latent": (lambda c: c.nodes.ATokenDecode().decode(c.tiny(), _latent(dtype=torch.int64)),
                               ValueError, "samples has dtype torch.int64; for FSQ tokens use AToken Detokenize"),
    "decode: another VAE's latent": (lambda c: c.tiny().vae.decode(torch.zeros(1, 16, 1, 2, 2)), ValueError,
                                     "has 16 latent channels but this AToken model uses 12"),
    "detokenize: codes out of range": (lambda c: c.nodes.ATokenDetokenize().detokenize(
        c.fsq(), torch.full((1, 2, 2, 2), 5000)), ValueError, "tokens must lie in \\[0, 4096\\)"),
    "detokenize: float tokens": (lambda c: c.nodes.ATokenDetokenize().detokenize(c.fsq(), torch.zeros(1, 2, 2, 2)),
                                 TypeError, "tokens must be an integer tensor"),
    "detokenize: model without FSQ": (lambda c: c.nodes.ATokenDetokenize().detokenize(
        c.tiny(), torch.zeros(1, 2, 2, 2, dtype=torch.int64)), ValueError, "has no FSQ quantizer; load an FSQ model"),
    "zero-shot: top_k 0": (lambda c: c.nodes.ATokenZeroShot().classify(c.tiny(), _image(), "cat", "text", top_k=0),
                           ValueError, "top_k must be a whole number >= 1; got 0"),
    "zero-shot: text model out of models/atoken": (lambda c: c.nodes.ATokenZeroShot().classify(
        c.tiny(), _image(), "cat", "../../../text", top_k=1), ValueError, OUTSIDE),
}


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("case", list(CASES))
def test_bad_node_inputs_get_one_line(case, comfy):  # noqa: F811
    import shutil

    from tests.test_three_d import media_mesh

    shutil.copy(media_mesh("Bunny.obj"), comfy.root / "input" / "bunny.obj")
    (comfy.root / "input" / "notes.txt").write_text("not a mesh")
    handles = {}

    def handle(name):
        if name not in handles:
            handles[name] = comfy.nodes.ATokenLoader().load(name, "fp32", "cpu")[0]
        return handles[name]

    c = types.SimpleNamespace(**vars(comfy), tiny=lambda: handle("tiny"), fsq=lambda: handle("tiny-fsq"))
    call, error, message = CASES[case]
    before = _files(comfy.root.parent)
    with pytest.raises(error, match=message) as caught:
        call(c)
    assert "\n" not in str(caught.value)
    assert _files(comfy.root.parent) == before  # nothing written, inside or outside ComfyUI's folders


def test_cuda_without_cuda_is_named(comfy):  # noqa: F811
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="device 'cuda' but this ComfyUI has no CUDA device; choose auto or cpu"):
        comfy.nodes.ATokenLoader().load("tiny", "fp32", "cuda")


def test_names_inside_the_folders_still_work(comfy):  # noqa: F811
    """The other side of the boundary: sub-folders and harmless '..' that stay inside are fine."""
    paths = comfy.nodes.paths
    assert paths.resolve("sub/../tiny") == str(comfy.models / "tiny")
    (comfy.root / "input" / "meshes").mkdir()
    (comfy.root / "input" / "meshes" / "a.obj").write_text("v 0 0 0\n")
    assert paths.input_file("meshes/../meshes/a.obj", (".obj",), "mesh") == str(comfy.root / "input" / "meshes" / "a.obj")
    assert paths.output_base("atoken/x/../splat") == (str(comfy.root / "output"), str(comfy.root / "output" / "atoken"
                                                                                      / "splat"))
