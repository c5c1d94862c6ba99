"""Model backends behind one protocol (base.py), the catalog of known models and the registry that opens them."""
