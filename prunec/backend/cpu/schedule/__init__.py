"""Schedule rules, one module per op family, over the shared steps in common.py."""
