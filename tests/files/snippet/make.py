"""Runs the PyTorch snippet of docs/pytorch-transformer.md ("Saving a PyTorch
transformer with the metadata") as written, on a small model with random f64 weights,
and records its output: `transformer.safetensors` is what the snippet
saves, `expected.json` the logits PyTorch computes for a few token
sequences. `suite/tests/seq_files.rs` checks that the crate reads the file
as that function.

Run by hand (CI has no PyTorch), from this folder:
    python make.py
"""

import json
import pathlib
import re

import torch

doc = pathlib.Path(__file__).parents[3] / "docs" / "pytorch-transformer.md"
text = doc.read_text()
start = text.index("## Saving a PyTorch transformer with the metadata")
code = re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)
# The snippet's "... train ..." becomes: a small model, random f64 weights.
small = """torch.manual_seed(0)
model = Transformer(vocab=11, d=16, heads=4, hidden=6).double()
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0.0, 0.4)
"""
code = code.replace("# ... train ...", small)
namespace = {}
exec(compile(code, str(doc), "exec"), namespace)
model = namespace["model"]
cases = [[3, 0, 7], [1, 10, 10, 4, 2]]
with torch.no_grad():
    logits = [model(torch.tensor(t)).tolist() for t in cases]
json.dump(
    {"torch": torch.__version__, "vocab": 11, "cases": [{"tokens": t, "logits": l} for t, l in zip(cases, logits)]},
    open("expected.json", "w"),
    indent=1,
)
