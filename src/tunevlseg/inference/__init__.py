"""Using a tuned adapter: the exported folder's format (:mod:`.files`), loading it onto its base model and
predicting masks (:mod:`.tuned`; ``tunevlseg.load_adapter``), and the forward pass's device and resizing
helpers shared with training (:mod:`.runtime`).

Part of the reusable library: imports models, prompts and data, never training or reporting code.
Importing this package is light; torch and the models load with its modules.
"""
