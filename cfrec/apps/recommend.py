"""``cfrec-recommend``: ask a trained run folder for recommendations, by raw MovieLens ids.

    cfrec-recommend RUN_DIR --user 1                     # top-10 unseen movies for user 1
    cfrec-recommend RUN_DIR --user 1 --min-ratings 50    # ... among movies with 50+ training ratings
    cfrec-recommend RUN_DIR --user 1 --movie 1193        # one predicted rating
    cfrec-recommend RUN_DIR --similar-to 2571 -k 5       # movies whose vectors are closest
    cfrec-recommend RUN_DIR --similar-users 1            # users whose vectors are closest
    cfrec-recommend RUN_DIR --rate 2571=5 1196=4 1=2     # a new user, folded in from a few ratings

The same answers as ``cfrec.load(RUN_DIR)`` in Python (`cfrec.serving`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from cfrec.data.idmap import IdMap
from cfrec.errors import CfrecError
from cfrec.serving import TrainedModel, load


def raw_id(id_map: IdMap, text: str) -> object:
    """``text`` as an id of ``id_map``: an integer where the map's ids are integers."""
    if np.issubdtype(np.asarray(id_map.ids).dtype, np.integer):
        try:
            return int(text)
        except ValueError:
            raise CfrecError(f"{text!r} is not an id of this model (its ids are integers)") from None
    return text


def parse_ratings(model: TrainedModel, pairs: Sequence[str]) -> dict[object, float]:
    """``MOVIE=RATING`` words as {raw movie id: rating}."""
    ratings = {}
    for pair in pairs:
        movie, _, value = pair.partition("=")  # no "=": value is "", not a number
        try:
            rating = float(value)
        except ValueError:
            raise CfrecError(f"--rate takes MOVIE=RATING pairs such as 2571=5, got {pair!r}") from None
        movie_id = raw_id(model.item_map, movie)
        if movie_id in ratings:
            raise CfrecError(f"--rate rates movie {movie_id!r} twice ({ratings[movie_id]:g} and {rating:g}): give each movie once")
        ratings[movie_id] = rating
    return ratings


def answer(model: TrainedModel, args: argparse.Namespace) -> str:
    """The text the command prints for ``args``."""
    if args.similar_to is not None:
        return table(model.similar_movies(raw_id(model.item_map, args.similar_to), args.k))
    if args.similar_users is not None:
        return table(model.similar_users(raw_id(model.user_map, args.similar_users), args.k))
    if args.movie is not None:
        user, movie = raw_id(model.user_map, args.user), raw_id(model.item_map, args.movie)
        return f"{model.predict(user, movie):.4f}"
    who = model.fold_in(parse_ratings(model, args.rate)) if args.rate else None
    frame = (who.recommend(args.k, exclude_seen=not args.include_seen, min_ratings=args.min_ratings) if who else
             model.recommend(raw_id(model.user_map, args.user), args.k, exclude_seen=not args.include_seen,
                             min_ratings=args.min_ratings))
    if frame.empty:
        return f"no movie to list: none left with {args.min_ratings} or more training ratings (lower --min-ratings)"
    return table(frame)


def table(frame: pd.DataFrame) -> str:
    """A frame as aligned text, scores and similarities to 4 decimals."""
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="cfrec-recommend", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="a run folder (or any folder with model.pt + model.json)")
    question = parser.add_mutually_exclusive_group(required=True)
    question.add_argument("--user", help="a known user's raw id: their top-k (with --movie: one prediction)")
    question.add_argument("--similar-to", metavar="MOVIE", help="movies closest to this raw movie id")
    question.add_argument("--similar-users", metavar="USER", help="users closest to this raw user id")
    question.add_argument("--rate", nargs="+", metavar="MOVIE=RATING", help="fold in a new user from these ratings")
    parser.add_argument("--movie", help="with --user: predict this raw movie id's rating")
    parser.add_argument("-k", type=int, default=10, help="list length (default 10)")
    parser.add_argument("--include-seen", action="store_true", help="keep movies the user has rated in the list")
    parser.add_argument("--min-ratings", type=int, default=0, metavar="N",
                        help="list only movies with at least N training ratings (useful with rating models)")
    parser.add_argument("--fallback", action="store_true",
                        help="unknown ids get the bias baseline of what is known instead of an error; "
                             "an unknown --user gets the most rated movies")
    args = parser.parse_args(argv)
    if args.movie is not None and args.user is None:
        parser.error("--movie needs --user")
    if args.k < 1:
        parser.error(f"-k must be at least 1, got {args.k}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Print the answer; errors (unknown ids, a bad run folder) as one line on stderr, exit code 1."""
    args = parse_args(argv)
    try:
        model = load(args.run_dir, unknown="fallback" if args.fallback else "error")
        print(answer(model, args))
    except (CfrecError, OSError) as err:
        print(f"cfrec-recommend: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
