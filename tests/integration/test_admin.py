"""ModelAdmin against a real server: loads, failures, DELTA/PATCH equivalence, re-index, auth, paths."""

from __future__ import annotations

import os
import time

import grpc
import numpy as np
import pytest
import torch

from dprscope_client import AdminClient, RetrieverClient, RetrieverError
from tests.unit.models import checkpoint_factory as cf

TOKEN = "test-admin-token"
QUESTIONS = cf.SWAP_QUESTIONS


@pytest.fixture(scope="module")
def ckpt_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoints")
    cf.write_delta(root / "query_edit.safetensors", scale=1.5)
    cf.write_delta(root / "both_edit.safetensors", scale=1.3)
    cf.write_delta(root / "both_edit_b.safetensors", scale=0.7)
    cf.write_nan_delta(root / "nan.safetensors")
    cf.write_patch(root / "patch.safetensors", layer=3, extra=4)
    (root / "corrupt.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken json")
    cf.write_tiny_bert(root / "tiny_bert")
    cf.write_edited_model(root / "edited_full", scale=1.5)
    (root / "nested").mkdir()
    outside = tmp_path_factory.mktemp("outside")
    cf.write_delta(outside / "evil.safetensors", scale=2.0)
    os.symlink(outside / "evil.safetensors", root / "link.safetensors")
    os.symlink(outside, root / "nested" / "dirlink")
    return root


@pytest.fixture
def admin_server(start_server, ckpt_root):
    return start_server(admin_token=TOKEN, checkpoint_root=ckpt_root)


def _clients(handle):
    return AdminClient(handle.target, TOKEN, timeout=120), RetrieverClient(handle.target, timeout=30)


def _scores(client, query, version=""):
    result = client.search(query, top_k=5, model_version=version, omit_text=True)
    return result.model_version, [h.score for h in result.hits], [h.passage_id for h in result.hits]


# --- auth and paths ----------------------------------------------------------------------
def test_no_token_configured_refuses_every_call(start_server, ckpt_root):
    handle = start_server(admin_token=None, checkpoint_root=ckpt_root)
    with AdminClient(handle.target, "anything", timeout=10) as admin:
        for call in (admin.list_models, admin.rollback, lambda: admin.activate("v1"),
                     lambda: admin.load("query_edit.safetensors", kind="DELTA")):
            with pytest.raises(RetrieverError) as info:
                call()
            assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_wrong_or_missing_token_is_unauthenticated(admin_server):
    for token in (None, "wrong-token", TOKEN + "x"):
        with AdminClient(admin_server.target, token, timeout=10) as admin, pytest.raises(RetrieverError) as info:
            admin.list_models()
        assert info.value.code == grpc.StatusCode.UNAUTHENTICATED
    with AdminClient(admin_server.target, TOKEN, timeout=10) as admin:
        assert admin.list_models().active_version == "v1"
    with RetrieverClient(admin_server.target, timeout=10) as client:  # Retriever needs no token
        assert client.search("who wrote hamlet", top_k=1).model_version == "v1"


@pytest.mark.parametrize("path", ["../outside/evil.safetensors", "nested/../../x.safetensors", "/etc/passwd",
                                  "link.safetensors", "nested/dirlink/evil.safetensors"])
def test_paths_outside_the_root_are_permission_denied(admin_server, tmp_path, path):
    with AdminClient(admin_server.target, TOKEN, timeout=30) as admin:
        with pytest.raises(RetrieverError) as info:
            admin.load(path, kind="DELTA", role="QUERY")
        assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
        assert str(admin_server.settings.checkpoint_root) not in info.value.details
        assert [v.version for v in admin.list_models().versions] == ["v1"]


def test_absolute_path_outside_and_no_root(start_server, tmp_path):
    outside = cf.write_delta(tmp_path / "d.safetensors")
    handle = start_server(admin_token=TOKEN, checkpoint_root=None)
    with AdminClient(handle.target, TOKEN, timeout=30) as admin, pytest.raises(RetrieverError) as info:
        admin.load(str(outside), kind="DELTA", role="QUERY")
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED


# --- failures leave the active version untouched -------------------------------------------
@pytest.mark.parametrize(("path", "kind", "code", "message"), [
    ("corrupt.safetensors", "DELTA", grpc.StatusCode.INVALID_ARGUMENT, "not a readable"),
    ("tiny_bert", "FULL", grpc.StatusCode.FAILED_PRECONDITION, "dim 32"),
    ("nan.safetensors", "DELTA", grpc.StatusCode.INVALID_ARGUMENT, "non-finite"),
    ("missing.safetensors", "DELTA", grpc.StatusCode.NOT_FOUND, "does not exist"),
])
def test_bad_checkpoints_fail_while_the_active_keeps_serving(admin_server, path, kind, code, message):
    admin, client = _clients(admin_server)
    with admin, client:
        before = _scores(client, QUESTIONS[0])
        with pytest.raises(RetrieverError) as info:
            admin.load(path, version="bad", kind=kind, role="BOTH")
        assert info.value.code == code
        assert message in info.value.details
        listing = admin.list_models()
        assert listing.active_version == "v1"
        if code != grpc.StatusCode.NOT_FOUND:
            bad = listing.get("bad")
            assert bad is not None and bad.state == "FAILED" and message in bad.error
            with pytest.raises(RetrieverError) as act:
                admin.activate("bad")
            assert act.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert _scores(client, QUESTIONS[0]) == before
    metrics = admin_server.metrics.exposition().decode()
    if code != grpc.StatusCode.NOT_FOUND:
        assert f'dprscope_checkpoint_loads_total{{kind="{kind}",result="failed"}} 1.0' in metrics


def test_nan_outputs_fail_the_canary(admin_server, ckpt_root):
    """A finite-weights edit whose outputs overflow is caught by the canary, not the tensor scan."""
    from safetensors.torch import load_file, save_file

    key = "embeddings.LayerNorm.weight"
    weight = load_file(str(cf.default_model_dir() / "model.safetensors"))[key]
    save_file({key: torch.full_like(weight, 3.0e38)}, str(ckpt_root / "overflow.safetensors"))
    with AdminClient(admin_server.target, TOKEN, timeout=60) as admin:
        with pytest.raises(RetrieverError) as info:
            admin.load("overflow.safetensors", version="overflow", kind="DELTA", role="QUERY")
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "non-finite" in info.value.details
        assert admin.list_models().get("overflow").state == "FAILED"


# --- DELTA / PATCH equivalence --------------------------------------------------------------
def test_delta_equals_the_full_edited_checkpoint(admin_server):
    admin, client = _clients(admin_server)
    with admin, client:
        delta = admin.load("query_edit.safetensors", version="delta", kind="DELTA", role="QUERY")
        full = admin.load("edited_full", version="full", kind="FULL", role="QUERY")
        assert delta.state == full.state == "READY"
        assert delta.query_fingerprint == full.query_fingerprint
        base_context = admin.list_models().get("v1").context_fingerprint
        assert delta.context_fingerprint == full.context_fingerprint == base_context
        assert delta.differs_from_index == ("query",) and not delta.needs_reindex
        assert delta.canary is not None and delta.canary.queries == 16 and 0 <= delta.canary.mean_topk_overlap <= 1
        for q in QUESTIONS:
            d, f, base = _scores(client, q, "delta"), _scores(client, q, "full"), _scores(client, q, "v1")
            assert d[0] == "delta" and f[0] == "full"
            assert d[2] == f[2]
            np.testing.assert_allclose(d[1], f[1], atol=1e-5)
            assert abs(d[1][0] - base[1][0]) > 1e-4  # the edit moved the scores


def test_patch_equals_the_widened_full_model(admin_server, encoder, small_index):
    from dprscope.encoders.text_encoder import TextEncoder
    from dprscope.index.serving import ServingIndex
    from dprscope.models.checkpoints import read_tensors

    admin, client = _clients(admin_server)
    with admin, client:
        info = admin.load("patch.safetensors", version="patched", kind="PATCH", role="QUERY")
        assert info.state == "READY" and info.differs_from_index == ("query",)
        tensors = read_tensors(admin_server.settings.checkpoint_root / "patch.safetensors")
        wide = TextEncoder(cf.widened_model(encoder.query.model, 3, tensors), encoder.query.tokenizer,
                           encoder.query.config)
        index = ServingIndex.open(small_index)
        try:
            scores, _ = index.search(wide.encode(QUESTIONS), 5)
        finally:
            index.close()
        for q, expected in zip(QUESTIONS, scores, strict=True):
            version, got, _ = _scores(client, q, "patched")
            assert version == "patched"
            np.testing.assert_allclose(got, expected, atol=1e-5)


# --- activation, re-index, stale -----------------------------------------------------------
def test_query_swap_keeps_the_index_and_rollback_returns(admin_server):
    admin, client = _clients(admin_server)
    with admin, client:
        index_before = client.index_info()
        admin.load("query_edit.safetensors", version="v2", kind="DELTA", role="QUERY")
        started = time.perf_counter()
        info = admin.activate("v2")
        assert info.state == "ACTIVE" and time.perf_counter() - started < 2.0
        after = client.index_info()
        assert after.model_version == "v2" and after.index_version == index_before.index_version
        assert not after.stale
        assert client.search(QUESTIONS[0], top_k=1).model_version == "v2"
        text = admin_server.metrics.exposition().decode()
        assert 'dprscope_swaps_total{action="activate",result="success"} 1.0' in text
        assert 'dprscope_model_info{context_fingerprint' in text and 'model_version="v2"' in text
        rolled = admin.rollback()
        assert rolled.version == "v1" and rolled.state == "ACTIVE"
        listing = admin.list_models()
        assert listing.active_version == "v1" and listing.get("v2").state == "READY"
        text = admin_server.metrics.exposition().decode()
        assert 'dprscope_swaps_total{action="rollback",result="success"} 1.0' in text
        assert 'model_version="v1"' in text.split("dprscope_model_info{")[1].split("\n")[0]
        admin.unload("v2")
        assert [v.version for v in admin.list_models().versions] == ["v1"]
        with pytest.raises(RetrieverError) as info_err:
            admin.unload("v1")
        assert info_err.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_context_swap_reindexes_in_background_then_flips(start_server, ckpt_root, tmp_path):
    handle = start_server(admin_token=TOKEN, checkpoint_root=ckpt_root, reindex_dir=tmp_path / "shadow")
    admin, client = _clients(handle)
    with admin, client:
        original = client.index_info()
        loaded = admin.load("both_edit.safetensors", version="ctx", kind="DELTA", role="BOTH")
        assert loaded.needs_reindex and set(loaded.differs_from_index) == {"query", "context"}
        info = admin.activate("ctx")
        assert info.state == "REINDEXING"
        seen_progress = []
        while True:  # the old pair serves meanwhile
            assert client.search(QUESTIONS[1], top_k=1).model_version in ("v1", "ctx")
            listing = admin.list_models()
            ctx = listing.get("ctx")
            seen_progress.append(ctx.reindex_progress)
            if listing.active_version == "ctx":
                break
            assert ctx.state == "REINDEXING", ctx.error
            time.sleep(0.2)
        assert ctx.state == "ACTIVE" and not ctx.needs_reindex
        assert any(0 < p < 1 for p in seen_progress) or seen_progress[-1] == 1.0
        now = client.index_info()
        assert now.model_version == "ctx"
        assert now.encoder_fingerprint == ctx.context_fingerprint != original.encoder_fingerprint
        assert now.index_version != original.index_version and not now.stale
        assert now.passages == original.passages
        assert client.search(QUESTIONS[1], top_k=3).index_version == now.index_version
        text = handle.metrics.exposition().decode()
        assert 'dprscope_reindex_progress_ratio{model_version="ctx"} 1.0' in text
        assert "dprscope_reindex_passages_total" in text
        # Rollback flips model *and* index back; re-activating reuses the shadow index.
        admin.rollback()
        assert client.index_info().encoder_fingerprint == original.encoder_fingerprint
        assert admin.activate("ctx").state == "ACTIVE"
        assert client.index_info().encoder_fingerprint == ctx.context_fingerprint
        admin.rollback()

        # A second context swap is cancelled by Unload; the active pair never moves.
        admin.load("both_edit_b.safetensors", version="ctx2", kind="DELTA", role="BOTH")
        assert admin.activate("ctx2").state == "REINDEXING"
        admin.unload("ctx2")
        listing = admin.list_models()
        assert listing.active_version == "v1" and listing.get("ctx2") is None
        assert client.index_info().encoder_fingerprint == original.encoder_fingerprint
        assert 'dprscope_swaps_total{action="activate",result="cancelled"} 1.0' in handle.metrics.exposition().decode()


def test_allow_stale_index_swaps_without_reindex_and_labels_it(admin_server):
    admin, client = _clients(admin_server)
    with admin, client:
        original = client.index_info()
        admin.load("both_edit.safetensors", version="stale", kind="DELTA", role="BOTH")
        info = admin.activate("stale", allow_stale_index=True)
        assert info.state == "ACTIVE" and info.stale_index and info.needs_reindex
        now = client.index_info()
        assert now.stale and now.model_version == "stale" and now.index_version == original.index_version
        assert "dprscope_index_stale 1.0" in admin_server.metrics.exposition().decode()
        admin.rollback()
        assert not client.index_info().stale
        assert "dprscope_index_stale 0.0" in admin_server.metrics.exposition().decode()


def test_old_versions_beyond_keep_previous_are_freed(start_server, ckpt_root):
    handle = start_server(admin_token=TOKEN, checkpoint_root=ckpt_root, keep_previous=1)
    admin, _ = _clients(handle)
    with admin:
        admin.load("query_edit.safetensors", version="a", kind="DELTA", role="QUERY")
        admin.load("patch.safetensors", version="b", kind="PATCH", role="QUERY")
        admin.activate("a")
        admin.activate("b")
        listing = admin.list_models()
        assert [v.version for v in listing.versions] == ["a", "b"]
        assert listing.previous_version == "a"
        assert "dprscope_model_versions_loaded 2.0" in handle.metrics.exposition().decode()
        assert admin.rollback().version == "a"


# --- TLS -----------------------------------------------------------------------------------
def _self_signed(tmp_path):
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_search_and_admin(start_server, ckpt_root, tmp_path):
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    handle = start_server(admin_token=TOKEN, checkpoint_root=ckpt_root, tls_cert=cert, tls_key=key)
    with RetrieverClient(handle.target, tls=True, root_certificates=cert, timeout=30) as client:
        assert client.search(QUESTIONS[0], top_k=2).model_version == "v1"
    with AdminClient(handle.target, TOKEN, tls=True, root_certificates=cert, timeout=30) as admin:
        assert admin.list_models().active_version == "v1"
    with RetrieverClient(handle.target, timeout=5) as plain, pytest.raises(RetrieverError):
        plain.search(QUESTIONS[0], top_k=1)
