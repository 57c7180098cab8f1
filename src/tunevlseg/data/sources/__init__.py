"""One module per real dataset: its :class:`~tunevlseg.data.registry.DatasetSpec` and raw reader."""
