"""Loading, splitting, leakage filtering and validation of classification datasets."""
