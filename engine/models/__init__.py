"""Predictions: per-user features kept as events arrive, models trained on a schedule, scores read
by the language (`predicted purchase in 30d`), templates (`recommended.products`), sends (`at best
time`) and caps (`cap push auto`).

Pure like the core it serves: it imports the language (`journeys`), the standard library and the
numeric libraries (numpy, scikit-learn), never another engine room. The core calls `observe` in
every step; the runtime trains a `ModelSet` from the store's states as of a moment and hands it to
the core; the daemon and the dry-run therefore score with the same code, the same features and the
same versions.
"""
