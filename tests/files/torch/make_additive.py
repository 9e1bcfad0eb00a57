"""Writes tests/files/torch/ebh_additive.pt and ebh_additive.json with real PyTorch.

A bilinear MLP as users write it, under the embed/body/head names but with
the usual additive residual `x = x + d(l(x) * r(x))` (not the research
code's lerp), in float64, and its logits on fixed inputs. Run by hand, not
by CI (CI has no torch):

    python tests/files/torch/make_additive.py

from the repository root. Seeded; README.md beside this script says which
torch wrote the committed files.
"""

import json
import pathlib

import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent


class AdditiveBlock(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.l = nn.Linear(d, h)
        self.r = nn.Linear(d, h)
        self.d = nn.Linear(h, d)

    def forward(self, x):
        return x + self.d(self.l(x) * self.r(x))


class AdditiveMlp(nn.Module):
    def __init__(self, d_in=3, d=4, h=5, depth=1, d_out=2):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.body = nn.ModuleList([AdditiveBlock(d, h) for _ in range(depth)])
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        x = self.embed(x)
        for block in self.body:
            x = block(x)
        return self.head(x)


def main():
    torch.manual_seed(27)
    for depth in (1, 2):
        net = AdditiveMlp(depth=depth).double().eval()
        name = f"ebh_additive_{depth}"
        torch.save(net.state_dict(), HERE / f"{name}.pt")
        x = torch.randn(6, 3, dtype=torch.float64)
        with torch.no_grad():
            logits = net(x)
        (HERE / f"{name}.json").write_text(
            json.dumps(
                {
                    "torch": torch.__version__,
                    "module": "AdditiveMlp: embed, body.{i}: x + d(l(x) * r(x)), head",
                    "depth": depth,
                    "inputs": x.tolist(),
                    "logits": logits.tolist(),
                },
                indent=1,
            )
            + "\n"
        )
        print(f"wrote {name}.pt and {name}.json")


if __name__ == "__main__":
    main()
