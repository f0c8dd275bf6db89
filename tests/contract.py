"""The contract every model passes: subclass `ModelContract` and define ``make_model``.

It checks the protocol of `cfrec.models.base`: fit returns the model, predictions have the
right shape and stay finite and in range, ``score`` agrees with ``predict`` where the model
says it should, ``recommend`` never returns a seen item, an unfitted model refuses to predict,
and ``config()`` + ``state()`` rebuild a model that predicts the same numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfrec.data import Split
from cfrec.evaluate import evaluate
from cfrec.errors import CfrecError
from cfrec.models.base import NotFittedError, Recommender


class ModelContract:
    score_is_prediction = True  # score(u)[i] == predict(u, i); False for e.g. popularity ranking
    clips_to_scale = True  # predictions stay within the training rating range

    def make_model(self) -> Recommender:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def fitted(cls, small_split: Split) -> Recommender:
        return cls().make_model().fit(small_split.train)

    def test_fit_returns_the_model(self, small_split: Split) -> None:
        model = self.make_model()
        assert model.fit(small_split.train) is model

    def test_unfitted_model_refuses_to_predict(self) -> None:
        with pytest.raises(NotFittedError, match="not fitted"):
            self.make_model().predict(torch.tensor([0]), torch.tensor([0]))

    def test_predict_shape_and_range(self, fitted: Recommender, small_split: Split) -> None:
        test = small_split.test
        if not fitted.predicts_ratings:  # a ranking model says so instead of passing scores off as ratings
            with pytest.raises(CfrecError, match="does not predict ratings"):
                fitted.predict(torch.as_tensor(test.users), torch.as_tensor(test.items))
            return
        pred = fitted.predict(torch.as_tensor(test.users), torch.as_tensor(test.items))
        assert pred.shape == (len(test),)
        assert torch.isfinite(pred).all()
        if self.clips_to_scale:
            lo, hi = fitted.rating_range
            assert pred.min() >= lo - 1e-5 and pred.max() <= hi + 1e-5

    def test_score_matches_predict(self, fitted: Recommender) -> None:
        if not self.score_is_prediction or fitted.ranks_by != "rating":
            pytest.skip("this model ranks by something other than its rating prediction")
        users = torch.tensor([0, 3, 5])
        scores = fitted.score(users)
        assert scores.shape == (3, fitted.n_items)
        items = torch.arange(fitted.n_items)
        for row, user in enumerate(users):
            pred = fitted.predict(user.repeat(fitted.n_items), items)
            torch.testing.assert_close(fitted.clip(scores[row]), pred, rtol=1e-4, atol=1e-4)

    def test_recommend_excludes_seen_items(self, fitted: Recommender, small_split: Split) -> None:
        train = small_split.train
        users = torch.arange(10)
        top, scores = fitted.recommend(users, k=5, exclude=train)
        assert top.shape == scores.shape == (10, 5)
        seen = train.to_csr()
        for row, user in enumerate(users.tolist()):
            assert not set(top[row].tolist()) & set(seen[user].indices.tolist())
            assert torch.all(scores[row, :-1] >= scores[row, 1:])

    def test_state_round_trip(self, fitted: Recommender, small_split: Split) -> None:
        rebuilt = type(fitted)(**fitted.config())
        rebuilt.restore_shape(fitted.shape_meta())
        rebuilt.load_state({k: v.clone() for k, v in fitted.state().items()})
        test = small_split.test
        users, items = torch.as_tensor(test.users), torch.as_tensor(test.items)
        if fitted.predicts_ratings:
            torch.testing.assert_close(rebuilt.predict(users, items), fitted.predict(users, items))
        torch.testing.assert_close(rebuilt.score(users[:5]), fitted.score(users[:5]))

    def test_evaluate_gives_finite_metrics(self, fitted: Recommender, small_split: Split) -> None:
        result = evaluate(fitted, small_split.train, small_split.test, ks=(5, 10))
        if fitted.predicts_ratings:
            assert np.isfinite(result["rmse"]) and 0 <= result["accuracy"] <= 1
        else:  # no rating metric for scores that are not ratings
            assert not {"rmse", "mae", "accuracy"} & set(result)
        assert 0 <= result["recall@5"] <= result["recall@10"] <= 1

    def test_fallback_for_unknown_ids(self, fitted: Recommender) -> None:
        unknown = np.array([-1, -1])
        if not fitted.predicts_ratings:
            with pytest.raises(CfrecError, match="does not predict ratings"):
                fitted.fallback_predict(unknown, unknown)
            return
        value = fitted.fallback_predict(unknown, unknown)
        lo, hi = fitted.rating_range
        assert np.all(np.isfinite(value)) and np.all((value >= lo) & (value <= hi))
