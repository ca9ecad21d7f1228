"""Slice streaming and the embedding cache on a real demo volume.

Streamed embeddings equal Predictor.set_image's one slice at a time; the cache hands back the same
embeddings, stays inside its byte bound, and cancelling a stream frees its staging buffers.
"""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
from conftest import tumour_slices

from samfast import Predictor
from samfast.preprocess import normalize_mr_putz
from samfast.runtime.embedding_cache import EmbeddingCache, content_key, embedding_identity
from samfast.runtime.streaming import SliceStreamer, stream_embeddings

CASE = "BraTS20_Demo_001"


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor("litemedsam", backend="onnxruntime")


@pytest.fixture(scope="module")
def volume(demo_cases) -> tuple[np.ndarray, list[int]]:
    """Putz-normalised demo volume and 5 tumour slices of it."""
    t1ce, mask = demo_cases[CASE]
    return normalize_mr_putz(t1ce), tumour_slices(mask, 5)


def simple_path(predictor, image) -> np.ndarray:
    predictor.set_image(image)
    return predictor.get_image_embedding()


@pytest.mark.parametrize("batch_size", [1, 2])
def test_streamed_embeddings_equal_set_image(predictor, volume, batch_size):
    scaled, zs = volume
    got = dict(stream_embeddings(predictor, scaled, indices=zs, batch_size=batch_size, max_in_flight=1))
    assert list(got) == zs
    for z in zs:
        np.testing.assert_allclose(got[z], simple_path(predictor, scaled[z]), atol=1e-5)


def test_streaming_another_plane_gives_that_planes_slices(predictor, volume):
    scaled, _ = volume
    x = scaled.shape[2] // 2
    ((index, embedding),) = stream_embeddings(predictor, scaled, axis=2, indices=[x])
    assert index == x
    np.testing.assert_allclose(embedding, simple_path(predictor, scaled[:, :, x]), atol=1e-5)


def test_cache_returns_identical_embeddings_and_counts(predictor, volume):
    scaled, zs = volume
    cache = EmbeddingCache()
    first = dict(stream_embeddings(predictor, scaled, indices=zs[:3], cache=cache))
    assert cache.stats()["misses"] == 3 and cache.hits == 0
    again = dict(stream_embeddings(predictor, scaled, indices=zs[:3], cache=cache))
    assert cache.hits == 3 and cache.misses == 3
    for z in zs[:3]:
        assert np.array_equal(first[z], again[z])
    # The key covers the backend/precision: another identity never hits.
    prepared = predictor.prepare_image(scaled[zs[0]])
    identity = embedding_identity(predictor)
    assert content_key(prepared, identity) != content_key(prepared, identity | {"precision": "bf16"})
    assert content_key(prepared, identity) == content_key(prepared.copy(), identity)


def test_predictor_with_a_cache_skips_the_encoder_for_a_slice_seen_before(predictor, volume):
    scaled, zs = volume
    expected = simple_path(predictor, scaled[zs[0]])
    predictor.cache = EmbeddingCache()
    try:
        first = simple_path(predictor, scaled[zs[0]])
        again = simple_path(predictor, scaled[zs[0]])
        other = simple_path(predictor, scaled[zs[1]])
        stats = predictor.cache.stats()
    finally:
        predictor.cache = None
    assert np.array_equal(first, again) and np.array_equal(first, expected)
    assert not np.array_equal(first, other)
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 2, 2)


def test_cache_is_bounded_by_bytes_least_recently_used_out():
    one = np.zeros((1, 256, 64, 64), np.float32)
    cache = EmbeddingCache(max_bytes=3 * one.nbytes)
    for k in range(5):
        cache.put(f"k{k}", one + k)
        assert cache.bytes <= cache.max_bytes
    assert len(cache) == 3 and cache.evictions == 2
    assert cache.get("k0") is None and cache.get("k4") is not None
    cache.get("k2")  # now most recent: k3 goes next
    cache.put("k5", one)
    assert "k3" not in cache and "k2" in cache
    stored = cache.get("k5")
    with pytest.raises(ValueError):
        stored[0, 0, 0, 0] = 1.0  # hits are shared, so read-only


def test_disk_cache_survives_a_new_cache_object(tmp_path):
    value = np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2)
    EmbeddingCache(folder=tmp_path).put("abc", value)
    assert [p.name for p in tmp_path.iterdir()] == ["abc.npy"]  # no temporary left behind
    fresh = EmbeddingCache(max_bytes=0, folder=tmp_path)
    assert np.array_equal(fresh.get("abc"), value) and fresh.disk_hits == 1
    assert fresh.get("missing") is None and fresh.misses == 1


def test_cancelling_a_stream_releases_its_buffers_and_worker(predictor, volume):
    scaled, _ = volume
    streamer = SliceStreamer(predictor, scaled, indices=range(40, 100), batch_size=2, max_in_flight=2)
    batches = iter(streamer)
    first = next(batches)
    assert first.indices == [40, 41] and streamer.buffers_alive == 4
    assert streamer.peak_in_flight <= 2
    streamer.cancel()
    assert streamer.buffers_alive == 0
    assert not any(t.name == "samfast-slice-worker" and t.is_alive() for t in threading.enumerate())
    del batches
    gc.collect()


def test_a_worker_error_reaches_the_consumer(predictor, volume):
    scaled, _ = volume

    def broken(image):
        raise RuntimeError("cannot read slice")

    with pytest.raises(RuntimeError, match="cannot read slice"):
        list(stream_embeddings(predictor, scaled, indices=[50], slice_fn=broken))
