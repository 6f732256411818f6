"""The what-if simulator: replay a demand trace against the real policy and against baselines."""
