"""The local web app (``fundus-vlp serve``) and the elite index it shows nearest examples from.

``analysis`` computes (model calls only through the model's public API), ``uploads`` checks what users
send, ``elite_index`` builds and reads ``elite_index.safetensors`` + ``elite_index.json`` in a model
folder, ``ui`` lays out the Gradio page. Importing this package does not import Gradio.
"""
