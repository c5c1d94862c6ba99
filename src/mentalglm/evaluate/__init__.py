"""Scoring predictions: classification metrics now; explanations, judge, report as they are built."""
