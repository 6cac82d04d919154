"""The Data step: the dataset browser, the class chart, the split controls and the health report."""
