"""What a model is worth: accuracy statistics, the per-stage figures and their report, the
validation gates, robustness, the host regression test and the plots."""
