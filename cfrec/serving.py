"""`cfrec.load(run_dir)`: a trained model that speaks raw MovieLens ids, without the training data.

    model = cfrec.load("runs/2026-11-23/14-05-00")
    model.predict(1, 1193)                 # user 1, movie 1193 → rating
    model.recommend(1, k=10)               # DataFrame: movie_id, title, genres, score
    model.similar_movies(1193, k=5)        # through an HNSW index over the item vectors
    new = model.fold_in({1193: 5, 2355: 4})   # a new user from a few ratings
    new.recommend(k=10)

Unknown ids raise `UnknownIdError` (a `KeyError`) naming the id, unless ``unknown="fallback"``:
then a pair with an unknown user or movie gets the bias baseline of what is known,
μ + b_u (known user) + b_i (known movie), clipped, an unknown user's ``recommend`` the most
rated movies of the training data, and the log says so.

Arguments are checked: ``k`` a positive integer (lists and neighbours are clamped to what
exists), fold-in ratings finite numbers within the model's rating range; a wrong one is a
`ConfigError` (a `ValueError`) naming the argument.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from cfrec.checkpoint import Checkpoint, load_model
from cfrec.device import resolve_device
from cfrec.errors import CfrecError, CheckpointError, ConfigError
from cfrec.index import HNSWIndex
from cfrec.models.base import mask_seen
from cfrec.validation import check_int

log = logging.getLogger(__name__)

Unknown = Literal["error", "fallback"]
ITEM_INDEX, USER_INDEX = "items.hnsw", "users.hnsw"


_MANY = (list, tuple, set, dict, np.ndarray, torch.Tensor, pd.Series)  # what is not one id


def _one_id(key: str, value: object, method: str, hint: str = "") -> None:
    """`ConfigError` naming ``key`` unless ``value`` is a single id."""
    if isinstance(value, _MANY):
        raise ConfigError(key, f"{method} takes one id, got a {type(value).__name__}{hint}")


def _id_list(key: str, values: Iterable) -> list:
    """``values`` as a list of single ids; `ConfigError` naming ``key`` for a lone id or nested ids."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(key, f"predict_many takes a sequence of ids, got {values!r}; predict takes one pair")
    ids = list(values)
    nested = next((v for v in ids if isinstance(v, _MANY)), None)
    if nested is not None:
        raise ConfigError(key, f"predict_many takes flat sequences of ids, got an element {nested!r}")
    return ids


class TrainedModel:
    """A fitted model with its id maps, item metadata and (lazily) HNSW indexes."""

    def __init__(self, checkpoint: Checkpoint, folder: Path | None = None, unknown: Unknown = "error"):
        if unknown not in ("error", "fallback"):
            raise ValueError(f"unknown must be 'error' or 'fallback', got {unknown!r}")
        self.checkpoint, self.folder, self.unknown = checkpoint, folder, unknown
        self.model = checkpoint.model
        self.user_map, self.item_map, self.item_info = checkpoint.user_map, checkpoint.item_map, checkpoint.item_info
        self._indexes: dict[str, HNSWIndex] = {}

    def __repr__(self) -> str:
        return (f"TrainedModel({self.checkpoint.meta['model']}, {len(self.user_map):,} users, "
                f"{len(self.item_map):,} items, from {self.folder})")

    # -- ratings --------------------------------------------------------------------------
    def predict(self, user_id: object, movie_id: object) -> float:
        """Predicted rating of one (user, movie) pair of raw ids."""
        _one_id("user_id", user_id, "predict", "; predict_many takes sequences of ids")
        _one_id("movie_id", movie_id, "predict", "; predict_many takes sequences of ids")
        return float(self.predict_many([user_id], [movie_id])[0])

    def predict_many(self, user_ids: Iterable, movie_ids: Iterable) -> np.ndarray:
        """Predicted ratings for parallel sequences of raw ids."""
        user_ids, movie_ids = _id_list("user_ids", user_ids), _id_list("movie_ids", movie_ids)
        if len(user_ids) != len(movie_ids):
            raise ConfigError("movie_ids", f"{len(movie_ids)} movie id(s) for {len(user_ids)} user id(s); "
                              "predict_many takes parallel sequences of equal length")
        users = self.user_map.codes(user_ids, strict=self.unknown == "error")
        items = self.item_map.codes(movie_ids, strict=self.unknown == "error")
        known = (users >= 0) & (items >= 0)
        out = np.empty(len(users), dtype=np.float32)
        if known.any():
            pred = self.model.predict(torch.as_tensor(users[known]), torch.as_tensor(items[known]))
            out[known] = pred.detach().cpu().numpy()
        if not known.all():
            log.warning("%d pair(s) with an unknown user or movie get the bias fallback", int((~known).sum()))
            out[~known] = self._fallback(users[~known], items[~known])
        return out

    def _fallback(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """What the model declares for pairs it cannot score (its bias baseline, or the mean rating)."""
        return self.model.fallback_predict(users, items)

    # -- new users ------------------------------------------------------------------------
    def fold_in(self, ratings: Mapping[object, float]) -> NewUser:
        """A new user from ``{movie_id: rating}``: their θ fitted with the movies frozen.

        Each rating must be a finite number within the model's rating range (`ConfigError`
        naming the movie and the value otherwise).
        """
        if not isinstance(ratings, Mapping):
            raise ConfigError("ratings", f"fold_in takes a {{movie_id: rating}} mapping, got a {type(ratings).__name__}")
        fold_in = getattr(self.model, "fold_in", None)
        if fold_in is None:
            raise CfrecError(f"{self.checkpoint.meta['model']} cannot fold in new users (cf and content can)")
        if not ratings:
            raise ConfigError("ratings", "fold_in needs at least one {movie_id: rating}")
        items = self.item_map.codes(list(ratings))
        values = self._check_ratings(ratings)
        return NewUser(self, fold_in(torch.as_tensor(items), torch.as_tensor(values)))

    def _check_ratings(self, ratings: Mapping[object, float]) -> np.ndarray:
        """The ratings as float32, each a finite number within the model's rating range."""
        low, high = self.model.rating_range or (-np.inf, np.inf)
        for movie, value in ratings.items():
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise ConfigError("ratings", f"movie {movie!r}: rating {value!r} is not a number")
        values = np.asarray(list(ratings.values()), dtype=np.float64)
        bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
        if bad.any():
            first = int(np.argmax(bad))
            movie, value = list(ratings)[first], values[first]
            problem = "is not a finite number" if not np.isfinite(value) else "is outside this model's rating range"
            raise ConfigError("ratings", f"movie {movie!r}: rating {value:g} {problem} [{low:g}, {high:g}]")
        return values.astype(np.float32)

    # -- lists ----------------------------------------------------------------------------
    def recommend(self, user_id: object, k: int = 10, exclude_seen: bool = True, min_ratings: int = 0) -> pd.DataFrame:
        """Top-``k`` movies for a known user: movie_id, title, genres, score. ``min_ratings`` leaves
        out movies with fewer training ratings (a rating model's top scores favour rarely rated
        movies with a few high ratings; the weighted-mask model does not need it). ``k`` above the
        number of movies gives them all.

        With ``unknown="fallback"``, a user the model does not know gets the movies with the
        most training ratings (at least ``min_ratings``), their count as the score.
        """
        _one_id("user_id", user_id, "recommend")
        check_int("k", k, 1)
        check_int("min_ratings", min_ratings, 0)
        if self.unknown == "fallback" and user_id not in self.user_map:
            log.warning("unknown user id %r: recommending the most rated movies (fallback)", user_id)
            scores = torch.as_tensor(self.movie_counts, dtype=torch.float32)[None, :]
            return self._top_movies(scores, self.checkpoint.seen[:0], k, False, max(min_ratings, 1))
        code = self.user_map.code(user_id)
        scores = self.model.score(torch.tensor([code])).float()  # (1, n_items)
        return self._top_movies(scores, self.checkpoint.seen[[code]], k, exclude_seen, min_ratings)

    def similar_movies(self, movie_id: object, k: int = 10) -> pd.DataFrame:
        """The ``k`` movies whose vectors are closest to ``movie_id``'s (HNSW, cosine); at most all
        the other movies. A movie without training ratings has no learned vector: a `CfrecError`
        (models of fixed movie features, `content`, answer from its features)."""
        _one_id("movie_id", movie_id, "similar_movies")
        code = self.item_map.code(movie_id)
        if getattr(self.model, "learns_items", True) and self.movie_counts[code] == 0:  # content's fixed features still know it
            raise CfrecError(f"movie {movie_id!r} has no training ratings: this model never learned its vector, "
                             "so no movie is similar to it here")
        labels, sims = self._neighbours("item", code, k)
        frame = self._describe(labels)
        frame["similarity"] = sims
        return frame

    def similar_users(self, user_id: object, k: int = 10) -> pd.DataFrame:
        """The ``k`` users whose vectors are closest to ``user_id``'s (HNSW, cosine); at most all
        the other users."""
        _one_id("user_id", user_id, "similar_users")
        code = self.user_map.code(user_id)
        labels, sims = self._neighbours("user", code, k)
        return pd.DataFrame({"user_id": self.user_map.to_ids(labels), "similarity": sims})

    def _neighbours(self, side: str, code: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        check_int("k", k, 1)
        index = self.index(side)
        k = min(k, len(index) - 1)
        if k < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        vector = index.vectors()[code : code + 1]
        labels, distances = index.query(vector, k, exclude=np.array([code]))
        keep = labels[0] >= 0
        return labels[0][keep].numpy(), index.similarity(distances[0][keep]).numpy()

    def index(self, side: str) -> HNSWIndex:
        """The HNSW index over ``user`` or ``item`` vectors: loaded from the run folder, else built.

        The saved index must hold exactly the model's vectors (checked before hnswlib reads the
        file); a damaged or foreign one is logged and replaced by an index built here.
        """
        if side not in self._indexes:
            name = ITEM_INDEX if side == "item" else USER_INDEX
            path = None if self.folder is None else self.folder / name
            vectors = self.vectors(side)
            index = None
            if path is not None and path.is_file():
                try:
                    index = HNSWIndex.load(path, vectors=vectors)
                except CheckpointError as err:
                    log.warning("%s; building the index from the model's vectors instead", err)
            self._indexes[side] = index or HNSWIndex(space=self.model.vector_similarity).build(vectors)
        return self._indexes[side]

    def vectors(self, side: str) -> torch.Tensor:
        """The model's user or item vectors; a clear error for models without any."""
        vectors = self.model.user_vectors if side == "user" else self.model.item_vectors
        if vectors is None:
            raise CfrecError(f"{self.checkpoint.meta['model']} has no {side} vectors to search")
        return vectors

    @cached_property
    def movie_counts(self) -> np.ndarray:
        """Training ratings of each movie, by code (n_items,)."""
        return np.bincount(self.checkpoint.seen.indices, minlength=len(self.item_map))

    def _top_movies(
        self, scores: torch.Tensor, seen: sp.csr_matrix, k: int, exclude_seen: bool, min_ratings: int,
    ) -> pd.DataFrame:
        """The top-``k`` frame of one user's ``scores`` (1, n_items), without the movies in ``seen``
        (their (1, n_items) ratings) if ``exclude_seen``, nor those rated fewer than ``min_ratings`` times."""
        if exclude_seen:
            mask_seen(scores, torch.zeros(1, dtype=torch.long), seen)
        if min_ratings > 0:
            scores[:, torch.as_tensor(self.movie_counts < min_ratings)] = -torch.inf
        return self._items_frame(scores[0], k)

    def _items_frame(self, scores: torch.Tensor, k: int) -> pd.DataFrame:
        top = torch.topk(scores, min(k, len(scores)))
        keep = torch.isfinite(top.values)
        frame = self._describe(top.indices[keep].numpy())
        frame["score"] = top.values[keep].numpy()
        return frame

    def _describe(self, codes: np.ndarray) -> pd.DataFrame:
        frame = pd.DataFrame({"movie_id": self.item_map.to_ids(codes)})
        if self.item_info is not None:
            frame["title"] = self.item_info.titles[codes]
            frame["genres"] = ["|".join(self.item_info.genre_list(c)) for c in codes]
        return frame


class NewUser:
    """A user folded into a trained model: predictions and recommendations by raw movie ids."""

    def __init__(self, trained: TrainedModel, folded):
        self.trained, self.folded = trained, folded

    @property
    def vector(self) -> np.ndarray:
        """The fitted θ of the new user."""
        return self.folded.theta[0].cpu().numpy()

    def predict(self, movie_id: object) -> float:
        return float(self.predict_many([movie_id])[0])

    def predict_many(self, movie_ids: Iterable) -> np.ndarray:
        """Predicted ratings of the new user for raw movie ids."""
        items = torch.as_tensor(self.trained.item_map.codes(list(movie_ids)))
        return self.folded.predict(torch.zeros_like(items), items).detach().cpu().numpy()

    def recommend(self, k: int = 10, exclude_seen: bool = True, min_ratings: int = 0) -> pd.DataFrame:
        """Top-``k`` movies (movie_id, title, genres, score), the ones rated at fold-in excluded;
        ``min_ratings`` as in `TrainedModel.recommend`."""
        check_int("k", k, 1)
        check_int("min_ratings", min_ratings, 0)
        scores = self.folded.score().float()  # (1, n_items)
        return self.trained._top_movies(scores, self.folded.seen, k, exclude_seen, min_ratings)


def load(run_dir: str | Path, *, unknown: Unknown = "error", device: str | torch.device = "cpu") -> TrainedModel:
    """The model saved in a run folder (or any folder holding ``model.pt`` + ``model.json``).

    Every tensor is mapped to ``device`` (``"cpu"`` by default, whatever device trained it;
    ``"auto"``: a GPU where there is one; a GPU asked for where there is none is a `ConfigError`
    naming ``device``), and KNN models are built there. The folder's files are checked before use (`cfrec.checkpoint`):
    a damaged or forged one is a `CheckpointError`, never a crash.
    """
    folder = Path(run_dir)
    device = resolve_device(device, "device")  # auto, or a clear error for a missing GPU, before any file is read
    return TrainedModel(load_model(folder, device=device), folder, unknown=unknown)
