"""A decoder-only transformer (nanoGPT's model): token ids (batch, T) in, next-token logits (batch, T, vocab) out.

The output layer is the token embedding itself (weight tying) and is not a module of its own: the logits are
F.linear(x, wte.weight). One parameter, one state-dict key, so a model built on the meta device and loaded with
load_state_dict(assign=True) stays tied; a separate lm_head would be assigned a second tensor and come untied.
"""

import math
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees itself and the positions before it."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # query, key and value in one matmul
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (part.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for part in self.c_attn(x).split(C, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(ln(x)), then x + MLP(ln(x))."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, gelu: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(n_embd, 4 * n_embd, bias=bias), gelu=nn.GELU(gelu),
                                             c_proj=nn.Linear(4 * n_embd, n_embd, bias=bias),
                                             dropout=nn.Dropout(dropout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token and position embeddings, n_layer blocks, a final LayerNorm, and logits through the token embedding."""

    def __init__(self, vocab: int, n_layer: int, n_head: int, n_embd: int, block_size: int, dropout: float,
                 bias: bool, gelu: str):
        super().__init__()
        self.block_size = block_size
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(Block(n_embd, n_head, dropout, bias, gelu) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        for name, parameter in self.named_parameters():
            if parameter.dim() == 2:
                # GPT-2: the projections into the residual stream are scaled down so that its variance does
                # not grow with depth (two of them per block).
                residual = name.endswith("c_proj.weight")
                nn.init.normal_(parameter, 0.0, 0.02 / math.sqrt(2 * n_layer) if residual else 0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]
        if T > self.block_size:
            raise ValueError(f"a window of {T} tokens is longer than the model's block_size {self.block_size}")
        x = self.drop(self.wte(ids) + self.wpe(torch.arange(T, device=ids.device)))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def gpt(inputs: int, outputs: int, *, n_layer: int, n_head: int, n_embd: int, block_size: int,
        dropout: float = 0.0, bias: bool = True, gelu: str = "none") -> GPT:
    """The builder: a GPT over a vocabulary of `inputs` tokens, which must equal `outputs` (tied embeddings).
    `gelu` is nn.GELU's `approximate`: none (exact), or tanh (GPT-2's, which its pretrained weights expect)."""
    if inputs != outputs:
        raise ValueError(f"gpt: inputs {inputs} and outputs {outputs} must both be the vocabulary size")
    sizes = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "block_size": block_size}
    if wrong := [f"{key} {value!r}" for key, value in sizes.items() if type(value) is not int or value < 1]:
        raise ValueError(f"gpt: {', '.join(wrong)} must be a positive integer")
    if not 0 <= dropout < 1:
        raise ValueError(f"gpt: dropout {dropout!r} must be at least 0 and below 1")
    if n_embd % n_head:
        raise ValueError(f"gpt: n_embd {n_embd} is not a multiple of n_head {n_head}")
    if gelu not in ("none", "tanh"):
        raise ValueError(f"gpt: gelu {gelu!r} must be none (exact) or tanh")
    return GPT(inputs, n_layer, n_head, n_embd, block_size, dropout, bias, gelu)


@torch.no_grad()
def sample(model: nn.Module, prompt: torch.Tensor, tokens: int, *, temperature: float = 1.0, top_k: int | None = None,
           generator: torch.Generator, block_size: int) -> torch.Tensor:
    """`prompt` (1-D token ids) followed by `tokens` ids, each drawn from the model's next-token distribution."""
    ids = prompt.view(1, -1)
    for _ in range(tokens):
        logits = model(ids[:, -block_size:])[:, -1, :] / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, -math.inf)
        next_id = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
        ids = torch.cat((ids, next_id), dim=1)
    return ids[0]
