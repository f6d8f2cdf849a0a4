"""Offline evaluation: Recall@K, nDCG@K, MRR on Home Depot judgments; personalized HitRate on REES46."""
