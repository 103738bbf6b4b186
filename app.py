"""Hugging Face Space entry point: serves the glassgpt run named by GLASSGPT_RUN.

On a Space, commit a run directory (config.json, model.safetensors,
tokenizer.json) next to this file and set GLASSGPT_RUN to its name.
Locally: GLASSGPT_RUN=runs/quickstart python app.py
"""

import os

from glassgpt.demo import launch

if __name__ == "__main__":
    launch(os.environ.get("GLASSGPT_RUN", "run"), host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
           port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
