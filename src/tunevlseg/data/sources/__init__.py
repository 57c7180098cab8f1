"""One module per real dataset: its :class:`~tunevlseg.data.spec.DatasetSpec` and raw reader."""
