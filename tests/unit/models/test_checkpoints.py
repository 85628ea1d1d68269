"""Checkpoint reading, path confinement, DELTA and PATCH application, delta diffing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dprscope.encoders.fingerprint import state_dict_fingerprint
from dprscope.errors import InvalidArgument, NotFound, PermissionDenied
from dprscope.models import checkpoints as ck
from tests.unit.models import checkpoint_factory as cf

QUERIES = ["who wrote hamlet", "what is the capital of france", "how does photosynthesis work"]


# --- confinement ---------------------------------------------------------------------
@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "sub").mkdir(parents=True)
    (r / "sub" / "ok.safetensors").write_bytes(b"x")
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    return r


def test_confine_accepts_paths_inside_root(root):
    assert ck.confine("sub/ok.safetensors", root) == (root / "sub" / "ok.safetensors").resolve()
    assert ck.confine(str(root / "sub" / "ok.safetensors"), root) == (root / "sub" / "ok.safetensors").resolve()


@pytest.mark.parametrize("path", ["../outside.safetensors", "sub/../../outside.safetensors",
                                  "../does-not-exist.safetensors"])
def test_confine_refuses_dotdot_escapes(root, path):
    with pytest.raises(PermissionDenied):
        ck.confine(path, root)


def test_confine_refuses_absolute_outside_and_symlinks(root, tmp_path):
    with pytest.raises(PermissionDenied):
        ck.confine(str(tmp_path / "outside.safetensors"), root)
    os.symlink(tmp_path / "outside.safetensors", root / "link.safetensors")
    with pytest.raises(PermissionDenied):
        ck.confine("link.safetensors", root)
    os.symlink(tmp_path, root / "dirlink")
    with pytest.raises(PermissionDenied):
        ck.confine("dirlink/outside.safetensors", root)


def test_confine_missing_and_unconfigured(root):
    with pytest.raises(NotFound):
        ck.confine("sub/missing.safetensors", root)
    with pytest.raises(PermissionDenied):
        ck.confine("sub/ok.safetensors", None)
    with pytest.raises(InvalidArgument):
        ck.confine("", root)


# --- reading -------------------------------------------------------------------------
def test_read_tensors_refuses_corrupt_and_unknown_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(InvalidArgument, match="not a readable"):
        ck.read_tensors(bad)
    pickled = tmp_path / "x.pkl"
    pickled.write_bytes(b"whatever")
    with pytest.raises(InvalidArgument, match="unsupported"):
        ck.read_tensors(pickled)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_torch_files_are_read_with_weights_only(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.ones(2)}, good)
    assert torch.equal(ck.read_tensors(good)["a"], torch.ones(2))
    evil = tmp_path / "evil.pt"
    torch.save({"a": _Evil()}, evil)
    with pytest.raises(InvalidArgument):
        ck.read_tensors(evil)


def test_check_finite_names_the_tensor():
    with pytest.raises(InvalidArgument, match=r"'w'.*1 non-finite"):
        ck.check_finite({"w": torch.tensor([1.0, float("nan")])}, "delta")


# --- DELTA -----------------------------------------------------------------------------
def test_delta_equals_full_edited_model_and_leaves_base_untouched(encoder, tmp_path):
    base = encoder.query
    before = base.fingerprint
    before_vectors = base.encode(QUERIES)
    delta = ck.read_tensors(cf.write_delta(tmp_path / "d.safetensors", scale=1.5))
    edited = ck.apply_delta(base, delta, "v2")

    full = edited_full_encoder(tmp_path)
    assert edited.fingerprint == full.fingerprint  # same weights, bit for bit
    np.testing.assert_array_equal(edited.encode(QUERIES), full.encode(QUERIES))
    assert state_dict_fingerprint(base.model) == before
    np.testing.assert_array_equal(base.encode(QUERIES), before_vectors)
    assert not np.allclose(edited.encode(QUERIES), before_vectors)


def edited_full_encoder(tmp_path):
    from dprscope.encoders.loading import load_bi_encoder

    return load_bi_encoder(str(cf.write_edited_model(tmp_path / "full", scale=1.5))).query


def test_delta_key_and_shape_checks(encoder):
    with pytest.raises(InvalidArgument, match="not in the base"):
        ck.apply_delta(encoder.query, {"nope.weight": torch.zeros(2)})
    with pytest.raises(InvalidArgument, match="shape"):
        ck.apply_delta(encoder.query, {cf.EDIT_LAYER: torch.zeros(3, 3)})


def test_diff_state_dicts_keeps_only_changed_tensors():
    a = {"x": torch.ones(2), "y": torch.zeros(3)}
    b = {"x": torch.ones(2), "y": torch.tensor([0.0, 1.0, 0.0])}
    assert list(ck.diff_state_dicts(a, b)) == ["y"]
    with pytest.raises(InvalidArgument, match="tensor names"):
        ck.diff_state_dicts(a, {"x": torch.ones(2)})
    with pytest.raises(InvalidArgument, match="changed shape"):
        ck.diff_state_dicts(a, {"x": torch.ones(3), "y": torch.zeros(3)})


def test_delta_make_writes_only_differing_tensors(tmp_path):
    from safetensors.torch import load_file

    from dprscope.commands.admin import make_delta

    base = cf.copy_embedded_model(tmp_path / "base")
    edited = cf.write_edited_model(tmp_path / "edited")
    summary = make_delta(base, edited, tmp_path / "out" / "delta.safetensors")
    written = load_file(str(tmp_path / "out" / "delta.safetensors"))
    assert list(written) == [cf.EDIT_LAYER]
    assert summary["tensors"] == 1
    with pytest.raises(InvalidArgument, match="same weights"):
        make_delta(base, base, tmp_path / "same.safetensors")


# --- PATCH -----------------------------------------------------------------------------
def test_patch_equals_the_equivalent_widened_full_model(encoder):
    base = encoder.query
    before = base.fingerprint
    tensors = cf.patch_tensors(layer=3, extra=4)
    patched, extra = ck.apply_patch(base, tensors, "patched")
    assert extra == 4
    layer = patched.model.encoder.layer[3]
    assert layer.intermediate.dense.out_features == base.model.config.intermediate_size + 4
    assert layer.output.dense.in_features == base.model.config.intermediate_size + 4
    assert patched.model.encoder.layer[2].intermediate.dense.out_features == base.model.config.intermediate_size

    wide = cf.widened_model(base.model, 3, tensors)
    features = base.tokenize(QUERIES)
    with torch.inference_mode():
        ours = patched.model(**features).last_hidden_state
        reference = wide(**features).last_hidden_state
        original = base.model(**features).last_hidden_state
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, original, atol=1e-4)
    assert base.fingerprint == before == state_dict_fingerprint(base.model)
    assert base.model.encoder.layer[3].intermediate.dense.out_features == base.model.config.intermediate_size


def test_patch_manual_ffn_computation(encoder):
    """The widened layer computes old FFN + W_out_new · gelu(W_in_new · x + b_new)."""
    base = encoder.query
    tensors = cf.patch_tensors(layer=1, extra=3, seed=7)
    patched, _ = ck.apply_patch(base, tensors)
    x = torch.randn(2, 5, 384)
    old, new = base.model.encoder.layer[1], patched.model.encoder.layer[1]
    with torch.inference_mode():
        h_old = old.intermediate(x)
        h_new = new.intermediate(x)
        extra = torch.nn.functional.gelu(x @ tensors["encoder.layer.1.intermediate.dense.weight"].T
                                         + tensors["encoder.layer.1.intermediate.dense.bias"])
        torch.testing.assert_close(h_new, torch.cat([h_old, extra], dim=-1))
        expected = old.output.dense(h_old) + extra @ tensors["encoder.layer.1.output.dense.weight"].T
        torch.testing.assert_close(new.output.dense(h_new), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda t: t.pop("encoder.layer.3.output.dense.weight"), "lacks"),
    (lambda t: t.__setitem__("encoder.layer.3.intermediate.dense.bias", torch.zeros(5)), "bias"),
    (lambda t: t.__setitem__("encoder.layer.3.output.dense.weight", torch.zeros(384, 5)), "output.dense"),
    (lambda t: t.__setitem__("encoder.layer.3.intermediate.dense.weight", torch.zeros(4, 10)), "expected"),
    (lambda t: t.__setitem__("encoder.layer.3.attention.self.query.weight", torch.zeros(1)), "not a Transformer"),
])
def test_patch_shape_checks(encoder, mutate, message):
    tensors = cf.patch_tensors(layer=3, extra=4)
    mutate(tensors)
    with pytest.raises(InvalidArgument, match=message):
        ck.apply_patch(encoder.query, tensors)


def test_patch_on_missing_layer(encoder):
    with pytest.raises(InvalidArgument, match="does not have"):
        ck.apply_patch(encoder.query, cf.patch_tensors(layer=17, extra=2))


def test_patch_file_round_trip(encoder, tmp_path):
    path = cf.write_patch(tmp_path / "p.safetensors", layer=0, extra=2)
    patched, extra = ck.apply_patch(encoder.query, ck.read_tensors(path))
    assert extra == 2
    assert np.isfinite(patched.encode(QUERIES)).all()


def test_split_by_role_for_two_towers():
    groups = ck.split_by_role({"query.a": torch.ones(1), "context.b": torch.ones(1)}, shared=False)
    assert set(groups) == {"query", "context"}
    with pytest.raises(InvalidArgument):
        ck.split_by_role({"a": torch.ones(1)}, shared=False)
    with pytest.raises(InvalidArgument):
        ck.split_by_role({"query.a": torch.ones(1)}, shared=True)


def test_safetensors_roundtrip_of_factory(tmp_path):
    save_file({"a": torch.ones(1)}, str(tmp_path / "a.safetensors"))
    assert ck.read_tensors(tmp_path / "a.safetensors")["a"].item() == 1.0
