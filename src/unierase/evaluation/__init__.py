"""Evaluation: TOFU's metrics (ROUGE-L, probability, truth ratio, forget quality, model utility) and
UniErase's (forget efficacy, model ability), answers before and after an erasure, and leak audits."""
