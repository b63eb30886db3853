"""Start-up code for the processes of a local run (`sitecustomize.py`, found through PYTHONPATH)."""
