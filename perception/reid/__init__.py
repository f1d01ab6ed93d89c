"""Person re-identification and fine-grained recognition: one library of composable parts.

``evaluation`` (Market-1501 protocol), ``rerank`` (k-reciprocal), ``clustering`` (ADTC), ``losses``,
``sampler`` (P x K), ``transforms`` (RMG's RSA), ``resnet``, ``arp``, ``parts`` and ``models``;
``registry`` names them and the paper recipes.
"""

from perception.reid.evaluation import RankMetrics, evaluate_rank  # noqa: F401
