"""steplog under MLflow: the tracking store of the ``steplog://`` scheme (store.py) and the
importer of MLflow stores. Imports mlflow; the entry point MLflow loads is the separate
top-level module ``steplog_mlflow``, which imports nothing until MLflow calls it."""
