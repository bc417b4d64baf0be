"""The trained decoder as an MLflow model, logged from code (MLflow "models from code"): loading it runs
this file and reads the safetensors export, so nothing is unpickled (the PyTorch flavour would pickle the
module). predict() takes prompts and returns their completions; `params` may set max_new_tokens,
temperature, top_k and seed.

    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    model.predict(["ROMEO:"], params={"max_new_tokens": 40})
"""

from __future__ import annotations

import mlflow
from mlflow.pyfunc import PythonModel


DEFAULTS = {"max_new_tokens": 48, "temperature": 0.8, "top_k": 40, "seed": 0}  # the params predict() takes


class DecoderModel(PythonModel):
    def load_context(self, context) -> None:
        from pathlib import Path

        from model.export import TOKENIZER, load_export
        from pipelines.tokenizer import Tokenizer

        export = Path(context.artifacts["export"])
        self.model, self.meta = load_export(export)
        self.tokenizer = Tokenizer(export / TOKENIZER)

    def predict(self, context, model_input, params=None):
        from model.generate import complete
        p = {**DEFAULTS, **(params or {})}
        prompts = list(model_input.iloc[:, 0]) if hasattr(model_input, "iloc") else list(model_input)
        return [complete(self.model, self.tokenizer, str(prompt), int(p["max_new_tokens"]), float(p["temperature"]),
                         int(p["top_k"]), int(p["seed"])) for prompt in prompts]


mlflow.models.set_model(DecoderModel())
