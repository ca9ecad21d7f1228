"""Explicit over ambient: the library logs through `logging` (the CLI shows it), and the service
builds its own predictor rather than changing the one it is handed."""

from __future__ import annotations

import logging

import numpy as np

from samfast import Predictor
from samfast.cli._common import show_library_log
from samfast.serve.sessions import SessionStore


def test_the_service_keeps_its_cache_on_its_own_predictor():
    handed = Predictor("tiny_vit_test", backend="onnxruntime", random_weights=True)
    store = SessionStore(handed, max_sessions=2, cache_slices=3)
    assert handed.cache is None  # left as it was handed
    assert store.predictor is not handed and store.predictor.backend is handed.backend
    one = 4 * int(np.prod(handed.spec.embedding_shape))  # float32
    assert store.predictor.cache.max_bytes == 2 * 3 * one
    assert store.predictor.choice == handed.choice
    # a predictor that brings its own cache is used as it is
    assert SessionStore(store.predictor).predictor is store.predictor


def test_library_log_lines_reach_the_command_once_however_often_it_is_set_up():
    logger = logging.getLogger("samfast")
    handlers, level = list(logger.handlers), logger.level
    first, second = [], []
    try:
        show_library_log(first.append)
        show_library_log(second.append)  # a second command in the same process replaces the first
        logging.getLogger("samfast.runtime.predictor").info("building a set")
        logging.getLogger("samfast.runtime.predictor").debug("not shown")
    finally:
        logger.handlers[:], logger.level = handlers, level
    assert first == [] and second == ["building a set"]
