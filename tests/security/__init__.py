"""Security regressions (issue 13): each finding of the review, reproduced as a test."""
